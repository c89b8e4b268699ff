-- wrk script: the finish call with a different valid token on every request (cold token path).
--   TOKENS_FILE  one token per line (examples/mint_tokens.rs --cold-count N)
--   TOKENS_START the line to start from (default 1), to reach past what earlier runs covered
--   REQ_PATH     path and query (default: the documented finish call, XML, human)
-- Prints how many requests were sent and how often the token list wrapped around: after a wrap
-- the gateway may answer from its verified-token cache, so a run that wrapped is not all cold.
local path = os.getenv("REQ_PATH") or "/v1/files/uploads/5475f75ce4b084a392305dcb?format=xml&human=true"
local body = '{"upload":{"nb_chunks":1}}'
local tokens = {}
local headers = {}
local threads = {}
n, i, wraps = 0, 0, 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local file = os.getenv("TOKENS_FILE")
  assert(file, "TOKENS_FILE not set")
  for line in io.lines(file) do
    if #line > 0 then
      tokens[#tokens + 1] = "Bearer " .. line
    end
  end
  n = #tokens
  local start = tonumber(os.getenv("TOKENS_START") or "1") or 1
  i = (start - 1) % math.max(n, 1)
  headers["Content-Type"] = "application/json"
end

function request()
  i = i + 1
  if i > n then
    i = 1
    wraps = wraps + 1
  end
  headers["Authorization"] = tokens[i]
  return wrk.format("PUT", path, headers, body)
end

function done(summary, latency, requests)
  local w = 0
  for _, t in ipairs(threads) do
    w = w + t:get("wraps")
  end
  io.write(string.format("cold tokens: %d distinct, token list wrapped %d time(s)\n", threads[1] and threads[1]:get("n") or 0, w))
end
