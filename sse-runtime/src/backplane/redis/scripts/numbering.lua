-- Put before publish.lua and sync.lua: the topic's numbering, kept to one history of writes.
--
-- A Redis's replication id names the history of writes it holds. Promoting a replica (a
-- failover) and restarting (from a snapshot, an append-only file or nothing) each start a new
-- one, and each may have lost writes that were numbered and delivered: continuing the
-- numbering there would give an id clients hold to a second event. So the meta hash records
-- (`r`) the history its numbering belongs to, and a topic found numbered under another one
-- is not continued but moves to a new epoch, with its stream emptied: every client is told
-- (`reset`), none skips or repeats an event silently. (A failover that lost nothing costs the
-- same one reset per topic: which writes are missing is known to no Redis.)
local function history()
  return string.match(redis.call('info', 'replication'), 'master_replid:(%x+)') or ''
end

-- The epoch `meta` numbers in, within this Redis's history: a topic without one (only if
-- `create`; nil otherwise) or numbered under another history starts `epoch` (a different
-- one than it had) with an empty stream. Keeps the meta hash's TTL.
local function numbering(meta, stream, epoch, create)
  local held = redis.call('hmget', meta, 'e', 'r')
  local current = history()
  if held[1] then
    if held[2] == current then
      return held[1]
    end
    if not held[2] then
      -- Numbered by a version that did not record histories: adopted as it is.
      redis.call('hset', meta, 'r', current)
      return held[1]
    end
    if epoch == held[1] then
      epoch = epoch .. '0'
    end
  elseif not create then
    return nil
  end
  redis.call('del', stream)
  redis.call('hdel', meta, 'h')
  redis.call('hset', meta, 'e', epoch, 's', 0, 'r', current)
  return epoch
end

