-- Doorman: summarize reserved-but-unacknowledged messages inside Redis.
--
-- ARGV[1] unacked_index (sorted set: delivery tag -> time a worker took it)
-- ARGV[2] unacked (hash: delivery tag -> [message, exchange, routing key])
-- ARGV[3] now (epoch seconds), ARGV[4] visibility timeout (s), ARGV[5] max rows,
-- ARGV[6] largest entry (bytes) decoded, ARGV[7] first row (0-based) to read,
-- ARGV[8] bytes decoded per call before stopping.
--
-- The keys are arguments, not declared KEYS: Redis lets a script declare only keys the
-- user may write, and Doorman's user (``doorman acl``) may only read these.
--
-- Only the task id, task name and queue of overdue entries are returned; the message
-- body, argsrepr, kwargsrepr and origin stay in Redis. The rows are read from ARGV[7] on
-- until ARGV[5] rows or ARGV[8] bytes: ``nx`` says where the next call resumes.
local index_key = ARGV[1]
local hash_key = ARGV[2]
local now = tonumber(ARGV[3])
local vt = tonumber(ARGV[4])
local max_rows = tonumber(ARGV[5])
local peek_max = tonumber(ARGV[6])
local offset = tonumber(ARGV[7])
local budget = tonumber(ARGV[8])

-- Inside a script an ACL denial reads "The user executing the script can't run this
-- command" (or "can't access" a key); outside, "NOPERM ...". What was denied: ``command``,
-- or 'a key' when the command was allowed but not on this key; nil when not a denial.
local function denied(reply, command)
  local err = string.lower(reply['err'])
  if string.find(err, "can't access", 1, true) or string.find(err, 'access a key', 1, true)
      or string.find(err, 'one of the keys', 1, true) then
    return 'a key'
  end
  if string.find(err, "can't run", 1, true) or string.find(err, 'noperm', 1, true)
      or string.find(err, 'no permissions', 1, true) then
    return command
  end
  return nil
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

local total = redis.pcall('ZCARD', index_key)
if type(total) == 'table' then
  local what = denied(total, 'ZCARD')
  if what then return cjson.encode({den = what}) end
  return cjson.encode({err = 'wrong_type'})
end
local ceil = now - vt
local overdue = redis.pcall('ZCOUNT', index_key, '-inf', ceil)
if type(overdue) == 'table' then
  return cjson.encode({den = denied(overdue, 'ZCOUNT') or 'ZCOUNT'})
end

local rows = {}
local found = redis.pcall(
  'ZRANGEBYSCORE', index_key, '-inf', ceil, 'WITHSCORES', 'LIMIT', offset, max_rows - offset)
if found['err'] then
  local what = denied(found, 'ZRANGEBYSCORE')
  if what then return cjson.encode({den = what}) end
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
  -- HSTRLEN first: an entry too large to decode is never copied out of the hash.
  local size = redis.pcall('HSTRLEN', hash_key, found[i])
  if type(size) == 'table' and size['err'] and denied(size, 'HSTRLEN') then
    return cjson.encode({den = denied(size, 'HSTRLEN')})
  end
  local raw = nil
  if type(size) == 'number' and size > 0 and size <= peek_max then
    raw = redis.pcall('HGET', hash_key, found[i])
    if type(raw) == 'table' and raw['err'] and denied(raw, 'HGET') then
      return cjson.encode({den = denied(raw, 'HGET')})
    end
  end
  used = used + 64  -- each row costs a little, even one not read
  if type(raw) == 'string' then
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
