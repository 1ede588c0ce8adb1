-- Sieve (Are We Fast Yet): count the primes up to 5000 with the sieve of
-- Eratosthenes.

local function sieve(flags, size)
  local prime_count = 0
  for i = 2, size do
    if flags[i] then
      prime_count = prime_count + 1
      local k = i + i
      while k <= size do
        flags[k] = false
        k = k + i
      end
    end
  end
  return prime_count
end

local function benchmark()
  local size = 5000
  local flags = {}
  for i = 1, size do
    flags[i] = true
  end
  return sieve(flags, size)
end

local iterations = 3000
local total = 0
for _ = 1, iterations do
  local result = benchmark()
  if result ~= 669 then
    error("sieve: wrong result " .. result)
  end
  total = total + result
end
print(string.format("%d", total))
