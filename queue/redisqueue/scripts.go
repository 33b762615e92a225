package redisqueue

import "github.com/redis/go-redis/v9"

// The scripts share this prelude. ARGV[1] is always the queue's key prefix
// P ("{ns}:q:<name>"); KEYS[1] is P..":meta", given only so that the
// client routes the call to the node holding the queue's hash slot (every
// key of a namespace carries the namespace as its hash tag).
//
// The keys of a queue, by suffix:
//
//	:s:<p>    stream of priority p (-10..10), consumer group "g", consumer "c"
//	:l:<p>    sorted set of the leases of stream p: "<id>:<n>" scored by deadline
//	:r:<p>    sorted set of the nacked entries of stream p, scored by when due
//	:levels   set of the priorities whose stream exists
//	:delayed  sorted set of delayed messages, scored by when due
//	:err      hash "<p>/<id>" -> last error of a nacked entry
//	:dead     stream of dead letters; :deadidx hash message id -> dead entry id
//	:meta     hash: paused, processed, failed, retried, deaddropped
//	:d:<key>  deduplication key -> message id, expiring after the window
//
// Every entry of a stream's pending entries list is in exactly one of its
// :l and :r sets; entries not yet delivered are the stream's other entries
// (acked ones are deleted). Times are milliseconds of Redis's clock.
const prelude = `
local P = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function int(x) return string.format('%d', x) end
local function skey(l) return P .. ':s:' .. l end
local function lkey(l) return P .. ':l:' .. l end
local function rkey(l) return P .. ':r:' .. l end
local function levels()
  local ls = redis.call('SMEMBERS', P .. ':levels')
  table.sort(ls, function(a, b) return tonumber(a) > tonumber(b) end)
  return ls
end
local function ensure_level(l)
  if redis.call('SADD', P .. ':levels', l) == 1 then
    redis.pcall('XGROUP', 'CREATE', skey(l), 'g', '0', 'MKSTREAM')
  end
end
local function depth()
  local n = redis.call('ZCARD', P .. ':delayed')
  for _, l in ipairs(levels()) do n = n + redis.call('XLEN', skey(l)) end
  return n
end
local function undelivered()
  local n = 0
  for _, l in ipairs(levels()) do
    n = n + redis.call('XLEN', skey(l)) - redis.call('ZCARD', lkey(l)) - redis.call('ZCARD', rkey(l))
  end
  return n
end
local function split(mem)
  local c = string.find(mem, ':', 1, true)
  return string.sub(mem, 1, c - 1), tonumber(string.sub(mem, c + 1))
end
local function sid_less(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)')
  local bm, bs = string.match(b, '^(%d+)-(%d+)')
  am, bm = tonumber(am), tonumber(bm)
  if am ~= bm then return am < bm end
  return tonumber(as) < tonumber(bs)
end
local function fields(kv)
  local f = {}
  for i = 1, #kv, 2 do f[kv[i]] = kv[i + 1] end
  return f
end
-- held reports whether the delivery n of entry sid of level l still holds
-- its lease.
local function held(l, sid, n, now)
  local dl = redis.call('ZSCORE', lkey(l), sid .. ':' .. n)
  return dl and tonumber(dl) > now
end
-- settle removes a leased entry from its stream and its lease set.
local function settle(l, sid, n)
  redis.call('ZREM', lkey(l), sid .. ':' .. n)
  redis.call('XACK', skey(l), 'g', sid)
  redis.call('XDEL', skey(l), sid)
  redis.call('HDEL', P .. ':err', l .. '/' .. sid)
end
`

// enqueueScript stores a batch, all or none (short of Redis failing
// halfway, say out of memory, which a script does not roll back).
//
// ARGV: P, wake channel, dedup window ms, max depth, then per message: id,
// priority, delay ms, run-at ms (0: none), dedup key ("": none), packed.
// Returns {-1} when the queue is full, else {id1, dup1, id2, dup2, ...}.
var enqueueScript = redis.NewScript(prelude + `
local chan, window, maxdepth = ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = now_ms()
local n = (#ARGV - 4) / 6
if depth() + n > maxdepth then return {-1} end
local lag = undelivered()
local first = redis.call('ZRANGE', P .. ':delayed', 0, 0, 'WITHSCORES')
local mindue = first[2] and tonumber(first[2])
local ready, wake = 0, false
local res = {}
for i = 5, #ARGV, 6 do
  local id, l, delay, runat, key, packed = ARGV[i], ARGV[i+1], tonumber(ARGV[i+2]), tonumber(ARGV[i+3]), ARGV[i+4], ARGV[i+5]
  local prev = false
  if key ~= '' then
    prev = redis.call('SET', P .. ':d:' .. key, id, 'NX', 'PX', window, 'GET')
  end
  if prev then
    res[#res+1] = prev
    res[#res+1] = 1
  else
    local due = 0
    if delay > 0 then due = now + delay elseif runat > now then due = runat end
    if due > 0 then
      redis.call('ZADD', P .. ':delayed', int(due),
        id .. string.format('%02d', tonumber(l) + 10) .. string.format('%015d', now) .. packed)
      if not mindue or due < mindue then mindue, wake = due, true end
    else
      ensure_level(l)
      redis.call('XADD', skey(l), '*', 'i', id, 't', int(now), 'm', packed)
      ready = ready + 1
    end
    res[#res+1] = id
    res[#res+1] = 0
  end
end
if (ready > 0 and lag <= 0) or wake then redis.call('PUBLISH', chan, '') end
return res
`)

// receiveScript leases up to max visible messages: for each priority from
// the highest, first the entries whose lease ran out or whose retry is due
// (oldest entry first), then entries never delivered (XREADGROUP). Due
// delayed messages enter their streams first.
//
// ARGV: P, wake channel, max, lease ms. Returns {-2} when paused, {-1, wait}
// when nothing is visible (wait: ms until something may become visible, or
// -1), else {0, then per message: priority, stream id, delivery, id,
// enqueued ms, packed, last error}.
var receiveScript = redis.NewScript(prelude + `
local chan, max, lease = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('HEXISTS', P .. ':meta', 'paused') == 1 then return {-2} end
local now = now_ms()
local wake, moved = false, 0
local due = redis.call('ZRANGEBYSCORE', P .. ':delayed', '-inf', now, 'LIMIT', 0, 1000)
for _, m in ipairs(due) do
  local l = tostring(tonumber(string.sub(m, 27, 28)) - 10)
  ensure_level(l)
  redis.call('XADD', skey(l), '*', 'i', string.sub(m, 1, 26), 't', tostring(tonumber(string.sub(m, 29, 43))), 'm', string.sub(m, 44))
  redis.call('ZREM', P .. ':delayed', m)
  moved = moved + 1
end
local out, n, retried = {0}, 0, 0
local function emit(l, sid, d, kv, lasterr)
  local f = fields(kv)
  out[#out+1] = l
  out[#out+1] = sid
  out[#out+1] = d
  out[#out+1] = f['i'] or ''
  out[#out+1] = f['t'] or '0'
  out[#out+1] = f['m'] or ''
  out[#out+1] = lasterr or ''
  n = n + 1
end
local until_ = int(now + lease)
for _, l in ipairs(levels()) do
  if n >= max then break end
  local s, lk, rk = skey(l), lkey(l), rkey(l)
  -- A lease that ends before every other lease of the level must wake
  -- the receivers waiting elsewhere, whose timers do not know of it.
  local head = redis.call('ZRANGE', lk, 0, 0, 'WITHSCORES')
  local earliest = not head[2] or tonumber(head[2]) > now + lease
  local before = n
  local old = {}
  for _, k in ipairs({lk, rk}) do
    for _, mem in ipairs(redis.call('ZRANGEBYSCORE', k, '-inf', now, 'LIMIT', 0, max - n)) do
      local sid, d = split(mem)
      old[#old+1] = {k, mem, sid, d}
    end
  end
  table.sort(old, function(a, b) return sid_less(a[3], b[3]) end)
  for _, o in ipairs(old) do
    if n >= max then break end
    redis.call('ZREM', o[1], o[2])
    local e = redis.call('XCLAIM', s, 'g', 'c', 0, o[3])
    if e[1] and e[1][2] then
      local d = o[4] + 1
      redis.call('ZADD', lk, until_, o[3] .. ':' .. d)
      emit(l, o[3], d, e[1][2], redis.call('HGET', P .. ':err', l .. '/' .. o[3]))
      retried = retried + 1
    else
      -- the entry was deleted by someone else: forget it
      redis.call('XACK', s, 'g', o[3])
      redis.call('HDEL', P .. ':err', l .. '/' .. o[3])
    end
  end
  if n < max then
    local r = redis.call('XREADGROUP', 'GROUP', 'g', 'c', 'COUNT', max - n, 'STREAMS', s, '>')
    if r and r[1] then
      for _, e in ipairs(r[1][2]) do
        redis.call('ZADD', lk, until_, e[1] .. ':1')
        emit(l, e[1], 1, e[2], nil)
      end
    end
  end
  if earliest and n > before then wake = true end
end
if retried > 0 then redis.call('HINCRBY', P .. ':meta', 'retried', retried) end
if n == 0 then
  local next = false
  local function consider(k)
    local h = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
    if h[2] then
      local at = tonumber(h[2])
      if not next or at < next then next = at end
    end
  end
  consider(P .. ':delayed')
  for _, l in ipairs(levels()) do consider(lkey(l)); consider(rkey(l)) end
  if next then return {-1, math.max(next - now, 0)} end
  return {-1, -1}
end
-- Delayed messages that came due and were not all taken here: others
-- may take them.
if moved > 0 and n >= max then wake = true end
if wake then redis.call('PUBLISH', chan, '') end
return out
`)

// ackScript acks a batch of deliveries. ARGV: P, then per receipt:
// priority, stream id, delivery. Returns 1 (acked) or 0 (stale) for each.
var ackScript = redis.NewScript(prelude + `
local now = now_ms()
local res, acked = {}, 0
for i = 2, #ARGV, 3 do
  local l, sid, d = ARGV[i], ARGV[i+1], ARGV[i+2]
  if held(l, sid, d, now) then
    settle(l, sid, d)
    acked = acked + 1
    res[#res+1] = 1
  else
    res[#res+1] = 0
  end
end
if acked > 0 then redis.call('HINCRBY', P .. ':meta', 'processed', acked) end
return res
`)

// extendScript sets a lease to end lease ms from now. ARGV: P, priority,
// stream id, delivery, lease ms. Returns 1, or 0 when stale.
var extendScript = redis.NewScript(prelude + `
local now = now_ms()
local l, sid, d = ARGV[2], ARGV[3], ARGV[4]
if not held(l, sid, d, now) then return 0 end
redis.call('ZADD', lkey(l), 'XX', int(now + tonumber(ARGV[5])), sid .. ':' .. d)
return 1
`)

// nackScript ends a lease and makes the entry due again after delay ms,
// recording the last error. ARGV: P, wake channel, priority, stream id,
// delivery, delay ms, last error. Returns 1, or 0 when stale.
var nackScript = redis.NewScript(prelude + `
local now = now_ms()
local chan, l, sid, d = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if not held(l, sid, d, now) then return 0 end
local mem = sid .. ':' .. d
redis.call('ZREM', lkey(l), mem)
redis.call('ZADD', rkey(l), int(now + tonumber(ARGV[6])), mem)
if ARGV[7] ~= '' then
  redis.call('HSET', P .. ':err', l .. '/' .. sid, ARGV[7])
else
  redis.call('HDEL', P .. ':err', l .. '/' .. sid)
end
redis.call('HINCRBY', P .. ':meta', 'failed', 1)
redis.call('PUBLISH', chan, '')
return 1
`)

// deadScript moves a leased entry to the dead-letter stream, discarding
// the oldest dead letters beyond max. ARGV: P, priority, stream id,
// delivery, last error, max dead. Returns 1, or 0 when stale.
var deadScript = redis.NewScript(prelude + `
local now = now_ms()
local l, sid, d, lasterr, maxdead = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
if not held(l, sid, d, now) then return 0 end
local e = redis.call('XRANGE', skey(l), sid, sid)
settle(l, sid, d)
redis.call('HINCRBY', P .. ':meta', 'failed', 1)
if not e[1] then return 1 end
local f = fields(e[1][2])
local dead, idx = P .. ':dead', P .. ':deadidx'
local dropped = 0
while redis.call('XLEN', dead) >= maxdead and dropped < 1000 do
  local old = redis.call('XRANGE', dead, '-', '+', 'COUNT', 1)
  if not old[1] then break end
  local of = fields(old[1][2])
  if of['i'] and redis.call('HGET', idx, of['i']) == old[1][1] then redis.call('HDEL', idx, of['i']) end
  redis.call('XDEL', dead, old[1][1])
  dropped = dropped + 1
end
if dropped > 0 then redis.call('HINCRBY', P .. ':meta', 'deaddropped', dropped) end
local did = redis.call('XADD', dead, '*', 'i', f['i'] or '', 't', f['t'] or '0', 'm', f['m'] or '',
  'p', l, 'a', d, 'e', lasterr)
redis.call('HSET', idx, f['i'] or '', did)
return 1
`)

// redriveScript moves dead letters back into their streams, with their
// deliveries counted afresh. ARGV: P, wake channel, max depth, limit, then
// the message ids (none: the oldest limit dead letters). Returns {moved,
// full}.
var redriveScript = redis.NewScript(prelude + `
local chan, maxdepth, limit = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local dead, idx = P .. ':dead', P .. ':deadidx'
local size = depth()
local moved, full = 0, 0
local function move(e)
  if size >= maxdepth then full = 1; return end
  local f = fields(e[2])
  local l = f['p'] or '0'
  ensure_level(l)
  redis.call('XADD', skey(l), '*', 'i', f['i'] or '', 't', f['t'] or '0', 'm', f['m'] or '')
  redis.call('XDEL', dead, e[1])
  if f['i'] and redis.call('HGET', idx, f['i']) == e[1] then redis.call('HDEL', idx, f['i']) end
  size = size + 1
  moved = moved + 1
end
if #ARGV == 4 then
  for _, e in ipairs(redis.call('XRANGE', dead, '-', '+', 'COUNT', limit)) do move(e) end
else
  for i = 5, #ARGV do
    local did = redis.call('HGET', idx, ARGV[i])
    if did then
      local e = redis.call('XRANGE', dead, did, did)
      if e[1] then move(e[1]) end
    end
  end
end
if moved > 0 then redis.call('PUBLISH', chan, '') end
return {moved, full}
`)

// statsScript returns {depth, in flight, delayed, dead, processed, failed,
// retried, dead dropped, oldest entry ms or -1, now ms, paused}. ARGV: P.
var statsScript = redis.NewScript(prelude + `
local now = now_ms()
local meta = P .. ':meta'
local depth_, inflight, delayed = 0, 0, 0
local oldest = -1
for _, l in ipairs(levels()) do
  local s, lk, rk = skey(l), lkey(l), rkey(l)
  local nl, nr = redis.call('ZCARD', lk), redis.call('ZCARD', rk)
  local dueL = redis.call('ZCOUNT', lk, '-inf', now)
  local dueR = redis.call('ZCOUNT', rk, '-inf', now)
  depth_ = depth_ + redis.call('XLEN', s) - nl - nr + dueL + dueR
  inflight = inflight + nl - dueL
  delayed = delayed + nr - dueR
  local h = redis.call('XRANGE', s, '-', '+', 'COUNT', 1)
  if h[1] then
    local ms = tonumber(string.match(h[1][1], '^(%d+)'))
    if oldest < 0 or ms < oldest then oldest = ms end
  end
end
local dueD = redis.call('ZCOUNT', P .. ':delayed', '-inf', now)
depth_ = depth_ + dueD
delayed = delayed + redis.call('ZCARD', P .. ':delayed') - dueD
local m = redis.call('HMGET', meta, 'processed', 'failed', 'retried', 'deaddropped', 'paused')
return {depth_, inflight, delayed, redis.call('XLEN', P .. ':dead'),
  tonumber(m[1] or 0), tonumber(m[2] or 0), tonumber(m[3] or 0), tonumber(m[4] or 0),
  oldest, now, m[5] and 1 or 0}
`)
