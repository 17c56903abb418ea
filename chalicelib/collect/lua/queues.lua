-- Doorman: measure the depth of a bounded slice of queues and peek at the oldest due message
-- of every non-empty priority list, inside Redis.
--
-- Privacy: a message never leaves Redis. Its envelope is decoded here and only the
-- allow-listed header fields below are returned; the body (args, kwargs), argsrepr,
-- kwargsrepr and origin are never copied into the reply.
--
-- Bounded work: the caller passes a bounded slice of queues (by count and by the bytes of
-- their names), and the script stops early, between two lists, once the bytes it copied
-- (messages read, key names built) pass ``budget``, returning the queue and list to resume
-- at; so no single call holds Redis for long whatever the queues hold. Every command goes
-- through redis.pcall: a command that the ACL denies is named in the reply, not fatal.
--
-- ARGV[1] key prefix (kombu's global_keyprefix), ARGV[2] largest message (bytes) decoded,
-- ARGV[3] bytes copied per call before stopping, ARGV[4] now (epoch seconds),
-- ARGV[5] how many messages to look at from the old end of a list for one that is due,
-- ARGV[6] priority separator, ARGV[7] priority steps beyond 0 (comma separated),
-- ARGV[8] first queue (1-based, among ARGV[10..]) to measure, ARGV[9] its first list
-- (1-based among the levels), ARGV[10..] queue names.
local prefix = ARGV[1]
local peek_max = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local sep = ARGV[6]
local first = tonumber(ARGV[8])
local first_level = tonumber(ARGV[9])
local FIRST_NAME = 10
local TEXT_MAX = 64  -- longest eta/expires read; anything longer is no time Celery wrote

local levels = {0}
for step in string.gmatch(ARGV[7], '[^,]+') do levels[#levels + 1] = tonumber(step) end

local denied = {}
local used = 0

-- A reply from redis.pcall: the value, or nil and the error text.
local function call(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply['err'] then
    local err = reply['err']
    -- Inside a script an ACL denial reads "The user executing the script can't run this
    -- command" (or "can't access" a key); outside, "NOPERM ...".
    local lower = string.lower(err)
    if string.find(lower, "can't run", 1, true) or string.find(lower, "can't access", 1, true)
        or string.find(err, 'NOPERM', 1, true) or string.find(lower, 'no permissions', 1, true) then
      denied[string.upper((...))] = true
    end
    return nil, err
  end
  return reply, nil
end

-- cjson cannot encode inf or NaN (a message holding 1e999 would fail the whole reply):
-- only finite numbers are passed on.
local function finite(v)
  if type(v) == 'number' and v == v and v ~= math.huge and v ~= -math.huge then return v end
  return nil
end

local function number_or_nil(v)
  if type(v) == 'string' then return finite(tonumber(v)) end
  return finite(v)
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- Epoch seconds of an ISO 8601 time as Celery writes ``eta`` (naive means UTC), or nil for
-- anything else: an impossible date or time, or trailing text, is no time at all.
local function epoch(text)
  local y, mo, d, h, mi, s = string.match(
    text, '^(%d%d%d%d)%-(%d%d)%-(%d%d)[T ](%d%d):(%d%d):(%d%d)')
  if not y then return nil end
  y, mo, d, h, mi, s = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(s)
  if y < 1 or mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or s > 60 then
    return nil
  end
  local t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s
  local rest = string.sub(text, 20)
  local frac = string.match(rest, '^%.(%d+)')
  if frac then
    t = t + tonumber('0.' .. frac)
    rest = string.sub(rest, string.len(frac) + 2)
  end
  if rest == '' or rest == 'Z' then return t end
  local sign, oh, om = string.match(rest, '^([%+%-])(%d%d):?(%d%d)$')
  if not sign or tonumber(oh) > 23 or tonumber(om) > 59 then return nil end
  local offset = tonumber(oh) * 3600 + tonumber(om) * 60
  if sign == '+' then t = t - offset else t = t + offset end
  return t
end

-- The allow-listed fields of one message; ``due`` is false for an ETA not reached yet.
local function inspect(raw, level)
  local size = string.len(raw)
  used = used + size  -- LINDEX copied it, decoded or not
  local r = {l = level, k = false}
  local digest = redis.sha1hex(string.sub(raw, 1, 512)) .. ':' .. size
  if size > peek_max then
    r.f = digest
    return r, true
  end
  local ok, msg = pcall(cjson.decode, raw)
  local due = true
  if ok and type(msg) == 'table' and type(msg['headers']) == 'table' then
    local h = msg['headers']
    local p = msg['properties']
    if type(p) ~= 'table' then p = {} end
    r.k = true
    if type(h['id']) == 'string' then r.id = h['id'] end
    if type(h['task']) == 'string' then r.t = h['task'] end
    local eta = h['eta']
    if type(eta) == 'string' and string.len(eta) <= TEXT_MAX then
      r.eta = eta
      local at = epoch(eta)
      if at and at > now then due = false end
    end
    local expires = h['expires']
    if type(expires) == 'string' and string.len(expires) <= TEXT_MAX then r.exp = expires end
    r.xms = number_or_nil(p['expiration'])
    r.pub = number_or_nil(h['x_published_at'])
    r.re = finite(h['retries'])
    local di = p['delivery_info']
    if h['redelivered'] == true or (type(di) == 'table' and di['redelivered'] == true) then
      r.rd = true
    end
    r.pr = finite(p['priority'])
    if type(msg['content-type']) == 'string' then r.ct = string.sub(msg['content-type'], 1, 64) end
  end
  r.f = r.id or digest
  return r, due
end

-- The oldest due message of one list: ETA tasks not due yet at the old end are passed
-- over, up to ``window`` messages. ``wx`` says the window ended before a due message (or
-- the list's end) was found, so the latency of what waits behind is not measured; ``xp``
-- counts the messages looked at whose ``expires`` has passed (a worker will discard them).
local function peek(key, level, length)
  local oldest = nil
  local looked = 0
  local expired = 0
  for i = 1, math.min(window, length) do
    local raw = call('LINDEX', key, -i)
    if type(raw) ~= 'string' then break end
    local r, due = inspect(raw, level)
    -- Only an expiry with its offset is a time: a naive one is read in the app's timezone,
    -- which Redis does not know.
    local gone = r.exp and (string.find(r.exp, 'Z$') or string.find(r.exp, '[%+%-]%d%d:?%d%d$'))
      and epoch(r.exp)
    if gone and gone < now then expired = expired + 1 end
    if due then
      if expired > 0 then r.xp = expired end
      return r
    end
    oldest = oldest or r
    looked = i
    if used >= budget then break end
  end
  if oldest then
    if length > looked then oldest.wx = true end
    if expired > 0 then oldest.xp = expired end
  end
  return oldest
end

-- Where this call stopped: the queue (index) and list (position among ``levels``) that the
-- next call starts at; a queue cut between two lists is returned in two parts, each with
-- its index ``i``, and the caller adds them up.
local out = {}
local resume, resume_level = nil, nil
local last = #ARGV - FIRST_NAME + 1
for index = first, last do
  local name = ARGV[FIRST_NAME + index - 1]
  local base = prefix .. name
  local entry = {i = index, d = 0, p = {}, o = {}}
  local start = 1
  if index == first then start = first_level end
  for position = start, #levels do
    if used >= budget and (index > first or position > start) then
      resume, resume_level = index, position
      break
    end
    local level = levels[position]
    local key = base
    if level > 0 then key = base .. sep .. level end
    used = used + string.len(key)
    local len, err = call('LLEN', key)
    if err then
      if string.find(err, 'WRONGTYPE', 1, true) and not entry.e then
        local kind = call('TYPE', key)
        local t = type(kind) == 'table' and kind['ok'] or 'unknown'
        entry.e = 'wrong_type:' .. t
        if level > 0 then entry.e = entry.e .. ':' .. level end
      end
    elseif len > 0 then
      entry.d = entry.d + len
      entry.p[tostring(level)] = len
      entry.o[#entry.o + 1] = peek(key, level, len)
    end
  end
  out[#out + 1] = entry
  if resume then break end
end

local denied_list = {}
for command in pairs(denied) do denied_list[#denied_list + 1] = command end
return cjson.encode({q = out, r = resume, rl = resume_level, den = denied_list})
