-- PATCH /entities/{id}/attrs/dissolvedOxygen over 1,000 entities (value + observedAt).
request = function()
  local body = '{"value":' .. math.random(0, 10000) / 100 .. ',"observedAt":"2024-05-01T10:00:00Z"}'
  return wrk.format("PATCH", "/ngsi-ld/v1/entities/" .. random_id(1000) .. "/attrs/dissolvedOxygen",
    {["Content-Type"] = "application/json"}, body)
end
