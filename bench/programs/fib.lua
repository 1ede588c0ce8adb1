-- Fib: naive doubly recursive Fibonacci; fib(32), computed 5 times.

local function fib(n)
  if n < 2 then
    return n
  end
  return fib(n - 1) + fib(n - 2)
end

local iterations = 5
local result = 0
for _ = 1, iterations do
  result = fib(32)
  if result ~= 2178309 then
    error("fib: wrong result " .. result)
  end
end
print(string.format("%d", result))
