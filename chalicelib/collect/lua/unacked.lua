-- Doorman: summarize reserved-but-unacknowledged messages inside Redis.
--
-- KEYS[1] unacked_index (sorted set: delivery tag -> time a worker took it)
-- KEYS[2] unacked (hash: delivery tag -> [message, exchange, routing key])
-- ARGV[1] now (epoch seconds), ARGV[2] visibility timeout (s), ARGV[3] max rows,
-- ARGV[4] largest entry (bytes) decoded, ARGV[5] first row (0-based) to read,
-- ARGV[6] bytes decoded per call before stopping.
--
-- Only the task id, task name and queue of overdue entries are returned; the message
-- body, argsrepr, kwargsrepr and origin stay in Redis. The rows are read from ARGV[5] on
-- until ARGV[3] rows or ARGV[6] bytes: ``nx`` says where the next call resumes.
local now = tonumber(ARGV[1])
local vt = tonumber(ARGV[2])
local max_rows = tonumber(ARGV[3])
local peek_max = tonumber(ARGV[4])
local offset = tonumber(ARGV[5])
local budget = tonumber(ARGV[6])

-- Inside a script an ACL denial reads "The user executing the script can't run this
-- command" (or "can't access" a key); outside, "NOPERM ...".
local function denied(reply)
  local err = string.lower(reply['err'])
  return string.find(err, "can't run", 1, true) or string.find(err, "can't access", 1, true)
    or string.find(err, 'noperm', 1, true) or string.find(err, 'no permissions', 1, true)
end

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
  if denied(total) then return cjson.encode({den = 'ZCARD'}) end
  return cjson.encode({err = 'wrong_type'})
end
local ceil = now - vt
local overdue = redis.pcall('ZCOUNT', KEYS[1], '-inf', ceil)
if type(overdue) == 'table' then return cjson.encode({den = 'ZCOUNT'}) end

local rows = {}
local found = redis.pcall(
  'ZRANGEBYSCORE', KEYS[1], '-inf', ceil, 'WITHSCORES', 'LIMIT', offset, max_rows - offset)
if found['err'] then
  if denied(found) then return cjson.encode({den = 'ZRANGEBYSCORE'}) end
  return cjson.encode({err = 'wrong_type'})
end
local used = 0
local next_row = nil
for i = 1, #found, 2 do
  if used >= budget then
    next_row = offset + (i - 1) / 2
    break
  end
  local entry = {a = age(found[i + 1])}
  local raw = redis.pcall('HGET', KEYS[2], found[i])
  if type(raw) == 'table' and raw['err'] and denied(raw) then
    return cjson.encode({den = 'HGET'})
  end
  if type(raw) == 'string' and string.len(raw) <= peek_max then
    used = used + string.len(raw)
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

return cjson.encode({n = total, o = overdue, r = rows, nx = next_row})
