-- GET / on the bare Starlette app: the HTTP stack's ceiling on this machine.
request = function()
  return wrk.format("GET", "/")
end
