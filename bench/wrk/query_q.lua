-- GET /entities?type=EntityN&q=dissolvedOxygen>X;name=="Name of my entity" (selective X).
request = function()
  local path = "/ngsi-ld/v1/entities?type=Entity" .. math.random(0, 9) ..
    "&q=dissolvedOxygen%3E" .. (99 + math.random(0, 90) / 100) .. "%3Bname%3D%3D%22Name%20of%20my%20entity%22"
  return wrk.format("GET", path)
end
