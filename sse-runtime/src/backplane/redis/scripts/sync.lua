-- KEYS: meta, stream. ARGV: epoch if new, count, idle TTL ms, first sequence wanted ('' for
-- the newest `count`), the caller's epoch. Returns {epoch, last seq, newest-first?, entries}.
local epoch = numbering(KEYS[1], KEYS[2], ARGV[1], true)
redis.call('pexpire', KEYS[1], ARGV[3])
redis.call('pexpire', KEYS[2], ARGV[3])
local last = redis.call('hget', KEYS[1], 's')
if ARGV[4] == '' or ARGV[5] ~= epoch then
  return {epoch, last, 1, redis.call('xrevrange', KEYS[2], '+', '-', 'COUNT', ARGV[2])}
end
return {epoch, last, 0, redis.call('xrange', KEYS[2], ARGV[4] .. '-0', '+', 'COUNT', ARGV[2])}
