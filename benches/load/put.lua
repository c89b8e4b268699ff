-- wrk script: the finish call with one valid (so, after the first request, cached) token.
-- Static request: wrk builds it once, so the load generator costs little per request.
--   TOKEN_FILE  file whose first line is the token
--   REQ_PATH    path and query (default: the documented finish call, XML, human)
local file = os.getenv("TOKEN_FILE")
assert(file, "TOKEN_FILE not set")
local f = assert(io.open(file, "r"))
local token = f:read("*l")
f:close()

wrk.method = "PUT"
wrk.path = os.getenv("REQ_PATH") or "/v1/files/uploads/5475f75ce4b084a392305dcb?format=xml&human=true"
wrk.body = '{"upload":{"nb_chunks":1}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token
