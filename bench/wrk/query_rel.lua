-- GET /entities?type=EntityN&q=servesDataset==<urn> (one dataset in 100).
request = function()
  local path = "/ngsi-ld/v1/entities?type=Entity" .. math.random(0, 9) ..
    "&q=servesDataset%3D%3Durn:ngsi-ld:Dataset:SurfaceWaterMonitoring" .. math.random(0, 99)
  return wrk.format("GET", path)
end
