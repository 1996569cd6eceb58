-- The set among KEYS with the fewest live tickets, plus ARGV[3 + i] for the i-th (what its
-- engine says it has waiting beyond ours; absent: 0), takes ticket ARGV[2] until ARGV[1] +
-- ARGV[3] (now and the lease, in seconds); ties go to the first (the caller shuffles KEYS);
-- lapsed tickets, of dead workers, are dropped first. Returns the index of that set, from 0.
local now, best, fewest = tonumber(ARGV[1]), 1, nil
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local count = redis.call('ZCARD', key) + tonumber(ARGV[3 + i] or 0)
  if fewest == nil or count < fewest then best, fewest = i, count end
end
redis.call('ZADD', KEYS[best], now + tonumber(ARGV[3]), ARGV[2])
redis.call('EXPIRE', KEYS[best], math.ceil(tonumber(ARGV[3])))
return best - 1
