-- Permute (Are We Fast Yet): generate all permutations of a 6-element array by
-- recursive swapping, counting the calls.

local count = 0
local v = nil

local function swap(i, j)
  local tmp = v[i]
  v[i] = v[j]
  v[j] = tmp
end

local function permute(n)
  count = count + 1
  if n ~= 0 then
    local n1 = n - 1
    permute(n1)
    for i = n1, 0, -1 do
      swap(n1 + 1, i + 1)
      permute(n1)
      swap(n1 + 1, i + 1)
    end
  end
end

local function benchmark()
  count = 0
  v = { 0, 0, 0, 0, 0, 0 }
  permute(6)
  return count
end

local iterations = 1000
local total = 0
for _ = 1, iterations do
  local result = benchmark()
  if result ~= 8660 then
    error("permute: wrong result " .. result)
  end
  total = total + result
end
print(string.format("%d", total))
