-- The gateway's queue for hosts' slots (app/upstream/fair_queue.py): atomic, one round trip each.
-- KEYS[1..8]: queue (member -> score), leases (member -> expiry), entries (member ->
-- "client<TAB>model<TAB>band<TAB>url url ..."), clients (client -> waiting), tags
-- (band<TAB>client -> its last tag), clocks (band -> the tag last served), seq, batch (batch
-- member -> when it joined); KEYS[9..]: the candidate hosts' in-flight sets.
-- ARGV: op ('join' | 'try' | 'leave'), now, member or id, lease; for try and join: the ticket,
-- its lease, the preferred candidate (from 1; 0: none), how much busier it may be (spill), the
-- longest a batch entry waits behind interactive ones; join adds client, model, band, the most
-- a client may have waiting; then per candidate its URL and its slots.
-- Bands: an interactive entry's score is its tag, a batch entry's BATCH + its tag, so every
-- interactive entry goes first; a batch entry that waited its longest is scored as the
-- interactive clock, so it goes next, and none starves.
-- Fairness within a band: a joining entry's tag is its client's last tag + 1, and no less than
-- the band's clock + 1 (start-time fair queuing), so each client's n-th waiting entry goes in
-- the n-th round; ties go first come, first served (the member starts with a sequence number).
-- An entry may take a free slot of a host when every entry ahead of it that could use that host
-- has a slot too; of those free, the preferred host (affinity) unless it is more than spill
-- generations busier than the least busy.
-- Returns {'granted', candidate index} | {'wait', position, member} | {'full', waiting} |
-- {'gone'} | {'left'}.
local now, lease = tonumber(ARGV[2]), tonumber(ARGV[4])
local KEEP_SECONDS = 3600  -- the queue's keys outlive any wait; an idle queue expires
local BATCH = 1e12  -- above any tag: a batch entry's score offset
local HOSTS = 8  -- the candidates' in-flight sets follow the queue's keys

local function drop(member)
  if redis.call('ZREM', KEYS[1], member) == 0 then return false end
  redis.call('ZREM', KEYS[2], member)
  redis.call('ZREM', KEYS[8], member)
  local entry = redis.call('HGET', KEYS[3], member)
  redis.call('HDEL', KEYS[3], member)
  if entry then
    local client = string.match(entry, '^([^\t]*)')
    if redis.call('HINCRBY', KEYS[4], client, -1) <= 0 then redis.call('HDEL', KEYS[4], client) end
  end
  return true
end

local function clock(band) return tonumber(redis.call('HGET', KEYS[6], band) or '0') end

-- entries whose worker stopped renewing them: a dead worker strands nobody
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do drop(member) end

local op, member = ARGV[1], ARGV[3]
if op == 'leave' then
  drop(member)
  return {'left'}
end

-- batch entries that waited their longest are served as if interactive
local aged = redis.call('ZRANGEBYSCORE', KEYS[8], '-inf', now - tonumber(ARGV[9]))
for _, waited in ipairs(aged) do
  redis.call('ZADD', KEYS[1], 'XX', clock('interactive'), waited)
  redis.call('ZREM', KEYS[8], waited)
end

local first = 10  -- the first candidate URL's argument
if op == 'join' then
  local client, model, band, most = ARGV[10], ARGV[11], ARGV[12], tonumber(ARGV[13])
  local waiting = tonumber(redis.call('HGET', KEYS[4], client) or '0')
  if waiting >= most then return {'full', waiting} end
  local tag = math.max(clock(band), tonumber(redis.call('HGET', KEYS[5], band .. '\t' .. client)
    or '0')) + 1
  redis.call('HSET', KEYS[5], band .. '\t' .. client, tag)
  member = string.format('%015d', redis.call('INCR', KEYS[7])) .. ':' .. member
  local urls = {}
  for i = 14, #ARGV, 2 do urls[#urls + 1] = ARGV[i] end
  if band == 'batch' then
    redis.call('ZADD', KEYS[1], BATCH + tag, member)
    redis.call('ZADD', KEYS[8], now, member)
  else
    redis.call('ZADD', KEYS[1], tag, member)
  end
  redis.call('HSET', KEYS[3], member,
    client .. '\t' .. model .. '\t' .. band .. '\t' .. table.concat(urls, ' '))
  redis.call('HINCRBY', KEYS[4], client, 1)
  for i = 1, HOSTS do redis.call('EXPIRE', KEYS[i], KEEP_SECONDS) end
  first = 14
elseif redis.call('ZSCORE', KEYS[1], member) == false then
  return {'gone'}
end
redis.call('ZADD', KEYS[2], now + lease, member)  -- a waiter's every try renews its lease

local ticket, ticket_lease = ARGV[5], tonumber(ARGV[6])
local preferred, spill = tonumber(ARGV[7]), tonumber(ARGV[8])
local urls, free, busy = {}, {}, {}
for i = first, #ARGV, 2 do
  local k = #urls + 1
  urls[k] = ARGV[i]
  redis.call('ZREMRANGEBYSCORE', KEYS[HOSTS + k], '-inf', now)  -- a dead worker's generations
  busy[k] = redis.call('ZCARD', KEYS[HOSTS + k])
  free[k] = tonumber(ARGV[i + 1]) - busy[k]
end

-- the entries ahead take the free slots they can use first; count those that share a host
local position = 0
for _, ahead in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if ahead == member then break end
  local theirs = ' ' .. string.match(redis.call('HGET', KEYS[3], ahead) or '', '[^\t]*$') .. ' '
  local shares, took = false, false
  for k, url in ipairs(urls) do
    if string.find(theirs, ' ' .. url .. ' ', 1, true) then
      shares = true
      if not took and free[k] > 0 then free[k], took = free[k] - 1, true end
    end
  end
  if shares then position = position + 1 end
end

local best = nil
for k = 1, #urls do
  if free[k] > 0 and (best == nil or busy[k] < busy[best]) then best = k end
end
if best == nil then return {'wait', position, member} end
if preferred > 0 and free[preferred] > 0 and busy[preferred] <= busy[best] + spill then
  best = preferred
end
redis.call('ZADD', KEYS[HOSTS + best], now + ticket_lease, ticket)
redis.call('EXPIRE', KEYS[HOSTS + best], math.ceil(ticket_lease))
local score = tonumber(redis.call('ZSCORE', KEYS[1], member))
drop(member)
local band, tag = 'interactive', score
if score >= BATCH then band, tag = 'batch', score - BATCH end
if tag > clock(band) then
  redis.call('HSET', KEYS[6], band, tag)
  redis.call('EXPIRE', KEYS[6], KEEP_SECONDS)
end
return {'granted', best - 1}
