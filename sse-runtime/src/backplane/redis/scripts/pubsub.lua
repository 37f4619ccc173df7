-- Put first in every script: pub/sub on one Redis (every subscriber of the channel, wherever
-- it is connected).
local function listeners(channel)
  return redis.call('pubsub', 'numsub', channel)[2]
end

local function send(channel, message)
  redis.call('publish', channel, message)
end

