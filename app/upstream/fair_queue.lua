-- The gateway's queue for Ollama hosts' slots (app/fairqueue.py): atomic, one round trip each.
-- KEYS[1..7]: queue (member -> fair tag), leases (member -> expiry), entries (member ->
-- "client<TAB>model<TAB>url url ..."), clients (client -> waiting), tags (client -> its last
-- tag), clock (the tag last served), seq; KEYS[8..]: the candidate hosts' in-flight sets.
-- ARGV: op ('join' | 'try' | 'leave'), now, member or id, lease; join adds client, model, the
-- most a client may have waiting; then for try and join: ticket, its lease, and per candidate
-- its URL and its slots.
-- Fairness: a joining entry's tag is its client's last tag + 1, and no less than the clock + 1
-- (start-time fair queuing), so each client's n-th waiting entry goes in the n-th round; ties
-- go first come, first served (the member starts with a sequence number). An entry may take a
-- free slot of a host when every entry ahead of it that could use that host has a slot too.
-- Returns {'granted', candidate index} | {'wait', position, member} | {'full', waiting} |
-- {'gone'} | {'left'}.
local now, lease = tonumber(ARGV[2]), tonumber(ARGV[4])
local KEEP_SECONDS = 3600  -- the queue's keys outlive any wait; an idle queue expires

local function drop(member)
  if redis.call('ZREM', KEYS[1], member) == 0 then return false end
  redis.call('ZREM', KEYS[2], member)
  local entry = redis.call('HGET', KEYS[3], member)
  redis.call('HDEL', KEYS[3], member)
  if entry then
    local client = string.match(entry, '^([^\t]*)')
    if redis.call('HINCRBY', KEYS[4], client, -1) <= 0 then redis.call('HDEL', KEYS[4], client) end
  end
  return true
end

-- entries whose worker stopped renewing them: a dead worker strands nobody
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do drop(member) end

local op, member = ARGV[1], ARGV[3]
if op == 'leave' then
  drop(member)
  return {'left'}
end

local first = 7  -- the first candidate URL's argument (the ticket and its lease just before it)
if op == 'join' then
  local client, model, most = ARGV[5], ARGV[6], tonumber(ARGV[7])
  local waiting = tonumber(redis.call('HGET', KEYS[4], client) or '0')
  if waiting >= most then return {'full', waiting} end
  local clock = tonumber(redis.call('GET', KEYS[6]) or '0')
  local tag = math.max(clock, tonumber(redis.call('HGET', KEYS[5], client) or '0')) + 1
  redis.call('HSET', KEYS[5], client, tag)
  member = string.format('%015d', redis.call('INCR', KEYS[7])) .. ':' .. member
  local urls = {}
  for i = 10, #ARGV, 2 do urls[#urls + 1] = ARGV[i] end
  redis.call('ZADD', KEYS[1], tag, member)
  redis.call('HSET', KEYS[3], member, client .. '\t' .. model .. '\t' .. table.concat(urls, ' '))
  redis.call('HINCRBY', KEYS[4], client, 1)
  for i = 1, 7 do redis.call('EXPIRE', KEYS[i], KEEP_SECONDS) end
  first = 10
elseif redis.call('ZSCORE', KEYS[1], member) == false then
  return {'gone'}
end
redis.call('ZADD', KEYS[2], now + lease, member)  -- a waiter's every try renews its lease

local ticket, ticket_lease = ARGV[first - 2], tonumber(ARGV[first - 1])
local urls, free, busy = {}, {}, {}
for i = first, #ARGV, 2 do
  local k = #urls + 1
  urls[k] = ARGV[i]
  redis.call('ZREMRANGEBYSCORE', KEYS[7 + k], '-inf', now)  -- a dead worker's generations
  busy[k] = redis.call('ZCARD', KEYS[7 + k])
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
redis.call('ZADD', KEYS[7 + best], now + ticket_lease, ticket)
redis.call('EXPIRE', KEYS[7 + best], math.ceil(ticket_lease))
local tag = tonumber(redis.call('ZSCORE', KEYS[1], member))
drop(member)
if tag > tonumber(redis.call('GET', KEYS[6]) or '0') then
  redis.call('SET', KEYS[6], tag, 'EX', KEEP_SECONDS)
end
return {'granted', best - 1}
