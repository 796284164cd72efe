-- Shared helpers: the Stellio load-test entity (see REFERENCES.md) and a per-thread counter.
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function stellio_entity(id, etype)
  return '{"id":"' .. id .. '","type":"' .. etype .. '",' ..
    '"name":{"type":"Property","value":"Name of my entity"},' ..
    '"description":{"type":"Property","value":"Description of my entity"},' ..
    '"stationCode":{"type":"Property","value":"BSS002JAWM"},' ..
    '"ammonium":[{"type":"Property","value":0.34,"unitCode":"M1","observedAt":"2023-03-02T10:00:00Z","datasetId":"urn:ngsi-ld:Dataset:Bottom"},' ..
    '{"type":"Property","value":0.41,"unitCode":"M1","observedAt":"2023-03-02T10:00:00Z","datasetId":"urn:ngsi-ld:Dataset:Surface"}],' ..
    '"dissolvedOxygen":{"type":"Property","value":' .. math.random(0, 10000) / 100 .. ',"sandreCode":{"type":"Property","value":"1311"}},' ..
    '"waterTemperature":[{"type":"Property","value":10.9,"unitCode":"CEL","datasetId":"urn:ngsi-ld:Dataset:Bottom"},' ..
    '{"type":"Property","value":12.9,"unitCode":"CEL","datasetId":"urn:ngsi-ld:Dataset:Surface"}],' ..
    '"servesDataset":{"type":"Relationship","object":"urn:ngsi-ld:Dataset:SurfaceWaterMonitoring' .. math.random(0, 99) .. '"},' ..
    '"location":{"type":"GeoProperty","value":{"type":"Point","coordinates":[3.53452158,43.48562782]}}}'
end

local n = tonumber(os.getenv("BENCH_ENTITIES") or "100000")
function random_id(limit)
  return "urn:ngsi-ld:Entity:r" .. math.random(1, math.min(n, limit or n))
end
