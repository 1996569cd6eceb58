-- Gives up the claim KEYS[1] only if generation ARGV[1] still holds it: a slow leader must not
-- free its successor's.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
