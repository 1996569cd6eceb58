-- One round trip for every request: a cache hit (KEYS[1], read when ARGV[3] is '1'), or lead the
-- generation (claim KEYS[2] for generation ARGV[1], a lease of ARGV[2] ms), or join the one that
-- holds the claim.
if ARGV[3] == '1' then
  local hit = redis.call('GET', KEYS[1])
  if hit then return {'hit', hit, redis.call('PTTL', KEYS[1])} end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'lead', ARGV[1]} end
return {'join', redis.call('GET', KEYS[2])}
