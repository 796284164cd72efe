-- GET /entities/{id} over a fixed set of ids created beforehand (urn:ngsi-ld:Entity:r1..rN).
local n = tonumber(os.getenv("BENCH_ENTITIES") or "1000")
request = function()
  local id = "urn:ngsi-ld:Entity:r" .. math.random(1, n)
  return wrk.format("GET", "/ngsi-ld/v1/entities/" .. id)
end
