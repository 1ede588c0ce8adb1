-- Fib35: naive doubly recursive Fibonacci; fib(35), computed once (issue 16's
-- target measure).

local function fib(n)
  if n < 2 then
    return n
  end
  return fib(n - 1) + fib(n - 2)
end

local result = fib(35)
if result ~= 9227465 then
  error("fib35: wrong result " .. result)
end
print(string.format("%d", result))
