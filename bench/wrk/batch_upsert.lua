-- POST /entityOperations/upsert with 1,000 new entities per request.
local counter = 0
request = function()
  counter = counter + 1
  local parts = {}
  for i = 1, 1000 do
    parts[i] = stellio_entity(string.format("urn:ngsi-ld:Entity:b%d-%d-%d", tid, counter, i), "Entity")
  end
  return wrk.format("POST", "/ngsi-ld/v1/entityOperations/upsert",
    {["Content-Type"] = "application/json"}, "[" .. table.concat(parts, ",") .. "]")
end
