-- PATCH /entities/{id}/attrs with a 3-attribute fragment incl. two dataset instances.
request = function()
  local v = math.random(0, 1000) / 100
  local body = '{"ammonium":[{"type":"Property","value":' .. v .. ',"datasetId":"urn:ngsi-ld:Dataset:Bottom"},' ..
    '{"type":"Property","value":' .. v .. ',"datasetId":"urn:ngsi-ld:Dataset:Surface"}],' ..
    '"dissolvedOxygen":{"type":"Property","value":' .. v .. ',"observedAt":"2024-05-01T10:00:00Z"},' ..
    '"stationCode":{"type":"Property","value":"BSS002JAWM"}}'
  return wrk.format("PATCH", "/ngsi-ld/v1/entities/" .. random_id(1000) .. "/attrs",
    {["Content-Type"] = "application/json"}, body)
end
