
local cur = redis.call('HMGET', KEYS[1], 'v', 'e', 'a', 'u')
if not live(cur[2], ARGV[2]) or cur[3] or cur[1] ~= ARGV[3] then return {0} end
retire(4, ARGV[2])
return {1, cur[4]}
