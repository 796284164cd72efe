-- GET /entities/{id} over the preloaded entities.
request = function()
  return wrk.format("GET", "/ngsi-ld/v1/entities/" .. random_id())
end
