-- KEYS: meta, stream, lease. ARGV: tail, epoch if new, history, idle TTL ms, dedup, lease
-- token ('' for none), channel, '1' if the publishing instance has the topic live (it is
-- listened to even if no subscription is registered here yet: after a restart, until the
-- instances subscribe again). Returns {status, epoch, seq}: 1 sent, 0 duplicate,
-- 2 nobody listens and nothing is retained, -1 fenced.
local meta, stream, lease = KEYS[1], KEYS[2], KEYS[3]
local tail, maxlen, dedup, token, channel = ARGV[1], tonumber(ARGV[3]), ARGV[5], ARGV[6], ARGV[7]
if token ~= '' and redis.call('get', lease) ~= token then
  return {-1}
end
local watched = ARGV[8] == '1' or listeners(channel) > 0
local epoch = numbering(meta, stream, ARGV[2], watched)
if not epoch then
  return {2}
end
if dedup == '1' then
  local digest = redis.sha1hex(tail)
  if redis.call('hget', meta, 'h') == digest then
    return {0, epoch, tonumber(redis.call('hget', meta, 's'))}
  end
  redis.call('hset', meta, 'h', digest)
end
local seq = redis.call('hincrby', meta, 's', 1)
local frame = 'id: ' .. epoch .. '-' .. seq .. '\n' .. tail
if maxlen > 0 then
  redis.call('xadd', stream, 'MAXLEN', '~', maxlen, seq .. '-0', 'f', frame)
end
if watched then
  redis.call('pexpire', meta, ARGV[4])
  redis.call('pexpire', stream, ARGV[4])
else
  local ttl = redis.call('pttl', meta)
  if ttl > 0 then redis.call('pexpire', stream, ttl) end
end
send(channel, frame)
return {1, epoch, seq}
