-- Every quota of one identity, checked at once, atomic, in one round trip (app/access/quotas.py).
-- KEYS[1], KEYS[2]: the identity's requests in the current and the previous fixed window;
-- KEYS[3], KEYS[4]: its tokens in the current and the previous token window;
-- KEYS[5]: its running generations, a sorted set of tickets scored by when their lease ends.
-- ARGV: requests' limit, window, seconds into it; tokens' limit, window, seconds into it;
-- concurrency's limit, now (seconds since the epoch), this request's ticket, lease (seconds).
-- A limit of 0 turns its quota off. A sliding window counts its previous fixed window with the
-- share of it still inside the sliding window. The request is admitted only if every quota on
-- has room for it: one more request, at least one token left, a free concurrency ticket. Only
-- then is it counted and its ticket added; a refused request changes nothing.
-- Returns {admitted 0|1, then per quota: fits 0|1, remaining, seconds until one more fits}.
local slack = 1e-9  -- float noise must not refuse a request at the very second it was promised

local function estimate(current, previous, window, elapsed)
  return previous * (window - elapsed) / window + current
end

-- Seconds until the estimate leaves room for one more unit (a request, a token).
local function wait_for_one(current, previous, limit, window, elapsed)
  if limit <= 0 then return 0 end  -- off
  if estimate(current, previous, window, elapsed) + 1 <= limit + slack then return 0 end
  if current + 1 <= limit and previous > 0 then
    -- the previous window's share shrinks enough before this window ends
    return window * (1 - (limit - current - 1) / previous) - elapsed
  end
  -- this window is full: wait for the next, where this one counts as the previous
  return (window - elapsed) + math.max(0, window * (1 - (limit - 1) / current))
end

local function counts(current_key, previous_key)
  return tonumber(redis.call('GET', current_key) or '0'),
         tonumber(redis.call('GET', previous_key) or '0')
end

local request_limit, request_window, request_elapsed =
  tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local token_limit, token_window, token_elapsed =
  tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local concurrency_limit, now, ticket, lease = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9],
  tonumber(ARGV[10])

local requests, previous_requests, tokens, previous_tokens, running = 0, 0, 0, 0, 0
local request_fits, token_fits, concurrency_fits = 1, 1, 1
if request_limit > 0 then
  requests, previous_requests = counts(KEYS[1], KEYS[2])
  if wait_for_one(requests, previous_requests, request_limit, request_window,
                  request_elapsed) > 0 then request_fits = 0 end
end
if token_limit > 0 then
  tokens, previous_tokens = counts(KEYS[3], KEYS[4])
  if wait_for_one(tokens, previous_tokens, token_limit, token_window, token_elapsed) > 0 then
    token_fits = 0
  end
end
if concurrency_limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)  -- the tickets of dead workers
  running = redis.call('ZCARD', KEYS[5])
  if running >= concurrency_limit then concurrency_fits = 0 end
end

local admitted = request_fits * token_fits * concurrency_fits
if admitted == 1 then
  if request_limit > 0 then
    requests = redis.call('INCR', KEYS[1])
    if requests == 1 then redis.call('EXPIRE', KEYS[1], request_window * 2) end
  end
  if concurrency_limit > 0 then
    redis.call('ZADD', KEYS[5], now + lease, ticket)
    redis.call('EXPIRE', KEYS[5], math.ceil(lease))
    running = running + 1
  end
end

local function left(current, previous, limit, window, elapsed)
  return math.max(0, math.floor(limit - estimate(current, previous, window, elapsed) + slack))
end
return {
  admitted,
  request_fits,
  left(requests, previous_requests, request_limit, request_window, request_elapsed),
  tostring(wait_for_one(requests, previous_requests, request_limit, request_window,
                        request_elapsed)),
  token_fits,
  left(tokens, previous_tokens, token_limit, token_window, token_elapsed),
  tostring(wait_for_one(tokens, previous_tokens, token_limit, token_window, token_elapsed)),
  concurrency_fits,
  math.max(0, concurrency_limit - running),
}
