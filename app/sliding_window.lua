-- Sliding-window counter: one check-and-count for one client, atomic, one round trip.
-- KEYS[1]: the counter of the current fixed window; KEYS[2]: the previous window's.
-- ARGV[1]: limit (requests); ARGV[2]: window (seconds); ARGV[3]: seconds into the current window.
-- The previous window counts with the share of it still inside the sliding window. A request is
-- admitted only if the estimate, itself included, stays within the limit; refused requests are
-- not counted. Returns {allowed 0|1, remaining, seconds until one more request fits (string)}.
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local elapsed = tonumber(ARGV[3])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local estimate = previous * (window - elapsed) / window + current
local slack = 1e-9  -- float noise must not refuse a request at the very second it was promised
local allowed = 0
if estimate + 1 <= limit + slack then
  current = redis.call('INCR', KEYS[1])
  if current == 1 then
    redis.call('EXPIRE', KEYS[1], window * 2)
  end
  estimate = estimate + 1
  allowed = 1
end
local wait = 0
if estimate + 1 > limit + slack then
  if current + 1 <= limit and previous > 0 then
    -- the previous window's share shrinks enough before this window ends
    wait = window * (1 - (limit - current - 1) / previous) - elapsed
  else
    -- this window is full: wait for the next, where this one counts as the previous
    wait = (window - elapsed) + math.max(0, window * (1 - (limit - 1) / current))
  end
end
return {allowed, math.max(0, math.floor(limit - estimate + slack)), tostring(wait)}
