-- Put first in every script, in a Redis Cluster: sharded pub/sub (Redis 7), so a message
-- goes to the shard that holds its slot (the topic's keys, one hash tag), not to every node.
local function listeners(channel)
  return redis.call('pubsub', 'shardnumsub', channel)[2]
end

local function send(channel, message)
  redis.call('spublish', channel, message)
end

