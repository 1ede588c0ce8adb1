-- List (Are We Fast Yet): build linked lists and run the recursive Takeuchi-like
-- `tail` function on them; the result is the length of the returned list.

local function make_list(length)
  if length == 0 then
    return nil
  end
  return { val = length, next = make_list(length - 1) }
end

local function list_length(e)
  if e.next == nil then
    return 1
  end
  return 1 + list_length(e.next)
end

local function is_shorter_than(x, y)
  local x_tail = x
  local y_tail = y
  while y_tail ~= nil do
    if x_tail == nil then
      return true
    end
    x_tail = x_tail.next
    y_tail = y_tail.next
  end
  return false
end

local function tail(x, y, z)
  if is_shorter_than(y, x) then
    return tail(tail(x.next, y, z), tail(y.next, z, x), tail(z.next, x, y))
  end
  return z
end

local function benchmark()
  local result = tail(make_list(15), make_list(10), make_list(6))
  return list_length(result)
end

local iterations = 1500
local total = 0
for _ = 1, iterations do
  local result = benchmark()
  if result ~= 10 then
    error("list: wrong result " .. result)
  end
  total = total + result
end
print(string.format("%d", total))
