-- Loop: a tight integer loop, 50 million iterations of sum = (sum + i*i) mod p.
-- Every intermediate value stays below 2^53, so LuaJIT's doubles agree.

local n = 50000000
local sum = 0
for i = 0, n - 1 do
  sum = (sum + i * i) % 1000000007
end
print(string.format("%d", sum))
