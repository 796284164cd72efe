-- POST /entities with a unique id per request (thread id + counter), Stellio-like body.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  thread_id = tid
end

request = function()
  counter = counter + 1
  local id = string.format("urn:ngsi-ld:Entity:w%d-%d-%d", thread_id, counter, math.random(1, 1e9))
  local body = '{"id":"' .. id .. '","type":"Entity",' ..
    '"name":{"type":"Property","value":"Name of my entity"},' ..
    '"stationCode":{"type":"Property","value":"BSS002JAWM"},' ..
    '"dissolvedOxygen":{"type":"Property","value":8.9,"sandreCode":{"type":"Property","value":"1311"}},' ..
    '"servesDataset":{"type":"Relationship","object":"urn:ngsi-ld:Dataset:SurfaceWaterMonitoring"},' ..
    '"location":{"type":"GeoProperty","value":{"type":"Point","coordinates":[3.53452158,43.48562782]}}}'
  return wrk.format("POST", "/ngsi-ld/v1/entities", {["Content-Type"] = "application/json"}, body)
end
