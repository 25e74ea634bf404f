
local function retire(g, now)
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  if ARGV[g] ~= '' then
    redis.call('HSET', KEYS[1], 'v', '0', 'e', ARGV[g], 'l', now, 'b', ARGV[g], 'a', '1', 'd', ARGV[g+1])
    redis.call('PEXPIREAT', KEYS[1], pxat(ARGV[g]))
  end
end
