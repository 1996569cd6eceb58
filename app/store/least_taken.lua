-- The set among KEYS with the fewest live tickets, plus ARGV[5 + i] for the i-th (what its
-- engine says it has waiting beyond ours; absent: 0), takes ticket ARGV[2] until ARGV[1] +
-- ARGV[3] (now and the lease, in seconds); ties go to the first (the caller shuffles KEYS).
-- The preferred set ARGV[4] (from 1; 0: none; conversation affinity) wins unless it counts more
-- than ARGV[5] above the fewest. Lapsed tickets, of dead workers, are dropped first. Returns
-- the index of the set taken, from 0.
local now, best, fewest, counts = tonumber(ARGV[1]), 1, nil, {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  counts[i] = redis.call('ZCARD', key) + tonumber(ARGV[5 + i] or 0)
  if fewest == nil or counts[i] < fewest then best, fewest = i, counts[i] end
end
local preferred = tonumber(ARGV[4])
if preferred > 0 and counts[preferred] <= fewest + tonumber(ARGV[5]) then best = preferred end
redis.call('ZADD', KEYS[best], now + tonumber(ARGV[3]), ARGV[2])
redis.call('EXPIRE', KEYS[best], math.ceil(tonumber(ARGV[3])))
return best - 1
