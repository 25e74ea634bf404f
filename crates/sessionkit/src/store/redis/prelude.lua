
local function pxat(e)
  local n = tonumber(e)
  if n < 1 then n = 1 elseif n > 1e15 then n = 1e15 end
  return string.format('%.0f', n)
end
local function live(e, now)
  return e and tonumber(e) > tonumber(now)
end
-- Writes a record hash from ARGV[i..i+6] = v, e, l, b, has-user, user, d.
local function put(k, i)
  redis.call('DEL', k)
  redis.call('HSET', k, 'v', ARGV[i], 'e', ARGV[i+1], 'l', ARGV[i+2], 'b', ARGV[i+3], 'd', ARGV[i+6])
  if ARGV[i+4] == '1' then redis.call('HSET', k, 'u', ARGV[i+5]) end
  redis.call('PEXPIREAT', k, pxat(ARGV[i+1]))
end
