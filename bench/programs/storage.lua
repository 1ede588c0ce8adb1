-- Storage (Are We Fast Yet): build a tree of arrays, four children per node,
-- seven levels deep, with leaves of random length; count the allocated arrays.

local seed = 74755
local count = 0

local function next_random()
  seed = (seed * 1309 + 13849) % 65536
  return seed
end

local function new_array(n)
  local a = {}
  for i = 1, n do
    a[i] = 0
  end
  return a
end

local function build_tree_depth(depth)
  count = count + 1
  if depth == 1 then
    return new_array(next_random() % 10 + 1)
  end
  local arr = new_array(4)
  for i = 1, 4 do
    arr[i] = build_tree_depth(depth - 1)
  end
  return arr
end

local function benchmark()
  seed = 74755
  count = 0
  build_tree_depth(7)
  return count
end

local iterations = 300
local total = 0
for _ = 1, iterations do
  local result = benchmark()
  if result ~= 5461 then
    error("storage: wrong result " .. result)
  end
  total = total + result
end
print(string.format("%d", total))
