-- KEYS: lease. ARGV: token, channel.
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[1])
  send(ARGV[2], '!')
  return 1
end
return 0
