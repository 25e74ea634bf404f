
if live(redis.call('HGET', KEYS[1], 'e'), ARGV[2]) then return {0} end
put(KEYS[1], 3)
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
return {1}
