-- KEYS: meta, stream. ARGV: channel, retention ms. Once no instance listens, the history is
-- kept for the retention time only.
if listeners(ARGV[1]) == 0 then
  if tonumber(ARGV[2]) > 0 then
    redis.call('pexpire', KEYS[1], ARGV[2])
    redis.call('pexpire', KEYS[2], ARGV[2])
  else
    redis.call('del', KEYS[1], KEYS[2])
  end
end
return 1
