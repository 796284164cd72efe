-- POST /entities with a unique id per request.
local counter = 0
request = function()
  counter = counter + 1
  local id = string.format("urn:ngsi-ld:Entity:c%d-%d-%d", tid, counter, math.random(1, 1e9))
  return wrk.format("POST", "/ngsi-ld/v1/entities", {["Content-Type"] = "application/json"},
    stellio_entity(id, "Entity"))
end
