-- Doorman: summarize reserved-but-unacknowledged messages inside Redis.
--
-- KEYS[1] unacked_index (sorted set: delivery tag -> time a worker took it)
-- KEYS[2] unacked (hash: delivery tag -> [message, exchange, routing key])
-- ARGV[1] now (epoch seconds), ARGV[2] visibility timeout (s), ARGV[3] max rows,
-- ARGV[4] largest entry (bytes) decoded.
--
-- Only the task id, task name and queue of overdue entries are returned; the message
-- body, argsrepr, kwargsrepr and origin stay in Redis.
local now = tonumber(ARGV[1])
local vt = tonumber(ARGV[2])
local max_rows = tonumber(ARGV[3])
local peek_max = tonumber(ARGV[4])

-- cjson cannot encode inf or NaN, and ZADD accepts +/-inf scores: pass finite ages only.
local function finite(v)
  if type(v) == 'number' and v == v and v ~= math.huge and v ~= -math.huge then return v end
  return nil
end

local function age(score)
  local taken = tonumber(score)
  if taken == nil then return nil end
  return finite(now - taken)
end

local total = redis.pcall('ZCARD', KEYS[1])
if type(total) == 'table' then
  return cjson.encode({err = 'wrong_type'})
end
local ceil = now - vt
local overdue = redis.call('ZCOUNT', KEYS[1], '-inf', ceil)

local rows = {}
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ceil, 'WITHSCORES', 'LIMIT', 0, max_rows)
for i = 1, #found, 2 do
  local entry = {a = age(found[i + 1])}
  local raw = redis.pcall('HGET', KEYS[2], found[i])
  if type(raw) == 'string' and string.len(raw) <= peek_max then
    local ok, value = pcall(cjson.decode, raw)
    if ok and type(value) == 'table' and type(value[1]) == 'table' then
      local h = value[1]['headers']
      if type(h) == 'table' then
        if type(h['id']) == 'string' then entry.id = h['id'] end
        if type(h['task']) == 'string' then entry.t = h['task'] end
      end
      if type(value[3]) == 'string' then entry.q = value[3] end
    end
  end
  rows[#rows + 1] = entry
end

return cjson.encode({n = total, o = overdue, r = rows})
