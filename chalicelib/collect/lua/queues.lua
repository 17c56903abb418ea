-- Doorman: discover Celery queues and workers, measure depths and peek at the oldest
-- message of every non-empty priority list, all inside Redis in one call.
--
-- Privacy: a message never leaves Redis. Its envelope is decoded here and only the
-- allow-listed header fields below are returned; the body (args, kwargs), argsrepr,
-- kwargsrepr and origin are never copied into the reply.
--
-- ARGV[1] key prefix (kombu's global_keyprefix), ARGV[2] max SCAN iterations,
-- ARGV[3] largest message (bytes) decoded, ARGV[4] max queues, ARGV[5..] configured queues.
local prefix = ARGV[1]
local max_iter = tonumber(ARGV[2])
local peek_max = tonumber(ARGV[3])
local max_queues = tonumber(ARGV[4])
local SEP = '\6\22'

local queues, seen, workers = {}, {}, {}
local pidboxes, seen_pidbox = {}, {}
local truncated = false

local function add_queue(name)
  if name ~= '' and not seen[name] then
    seen[name] = true
    queues[#queues + 1] = name
  end
end

for i = 5, #ARGV do add_queue(ARGV[i]) end

local function last_part(member)
  local start = 1
  while true do
    local s, e = string.find(member, SEP, start, true)
    if not s then break end
    start = e + 1
  end
  return string.sub(member, start)
end

local function ends_with(text, suffix)
  return suffix == '' or string.sub(text, -string.len(suffix)) == suffix
end

local head = prefix .. '_kombu.binding.'
-- The prefix is literal text: escape the glob characters SCAN MATCH would interpret.
local pattern = string.gsub(head, '[%*%?%[%]\\]', '\\%0') .. '*'
local cursor, iter = '0', 0
repeat
  local res = redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000)
  cursor = res[1]
  for _, key in ipairs(res[2]) do
    local exchange = string.sub(key, string.len(head) + 1)
    if redis.call('TYPE', key)['ok'] == 'set' then
      local is_pidbox = ends_with(exchange, '.pidbox')
      local is_reply = string.sub(exchange, 1, 6) == 'reply.'
      if not is_reply and exchange ~= 'celeryev' then
        if is_pidbox and not seen_pidbox[exchange] then
          seen_pidbox[exchange] = true
          pidboxes[#pidboxes + 1] = exchange
        end
        for _, member in ipairs(redis.call('SMEMBERS', key)) do
          local queue = last_part(member)
          if is_pidbox then
            local suffix = '.' .. exchange
            if ends_with(queue, suffix) then
              workers[#workers + 1] = string.sub(queue, 1, string.len(queue) - string.len(suffix))
            end
          elseif not ends_with(queue, '.pidbox') then
            add_queue(queue)
          end
        end
      end
    end
  end
  iter = iter + 1
until cursor == '0' or iter >= max_iter
if cursor ~= '0' then truncated = true end

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

local function peek(key, level)
  local raw = redis.call('LINDEX', key, -1)
  if not raw then return nil end
  local size = string.len(raw)
  local r = {l = level, s = size, k = false}
  local digest = redis.sha1hex(string.sub(raw, 1, 512)) .. ':' .. size
  if size > peek_max then
    r.f = digest
    r.x = 'oversized'
    return r
  end
  local ok, msg = pcall(cjson.decode, raw)
  if ok and type(msg) == 'table' and type(msg['headers']) == 'table' then
    local h = msg['headers']
    local p = msg['properties']
    if type(p) ~= 'table' then p = {} end
    r.k = true
    if type(h['id']) == 'string' then r.id = h['id'] end
    if type(h['task']) == 'string' then r.t = h['task'] end
    if type(h['eta']) == 'string' then r.eta = h['eta'] end
    if type(h['expires']) == 'string' then r.exp = h['expires'] end
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
  return r
end

local out = {}
for index, name in ipairs(queues) do
  if index > max_queues then
    truncated = true
    break
  end
  local base = prefix .. name
  local entry = {n = name, d = 0, p = {}, o = {}}
  for level = 0, 9 do
    local key = base
    if level > 0 then key = base .. SEP .. level end
    local len = redis.pcall('LLEN', key)
    if type(len) == 'table' then
      if level == 0 then entry.e = 'wrong_type:' .. redis.call('TYPE', key)['ok'] end
    elseif len > 0 then
      entry.d = entry.d + len
      entry.p[tostring(level)] = len
      entry.o[#entry.o + 1] = peek(key, level)
    end
  end
  out[#out + 1] = entry
end

return cjson.encode({q = out, w = workers, x = pidboxes, t = truncated})
