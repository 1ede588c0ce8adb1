-- Mandelbrot (Are We Fast Yet): render a size x size Mandelbrot set as a bitmap
-- (one bit per pixel, 8 pixels per byte) and xor all bytes into a checksum.
-- Bitwise operators are spelled out arithmetically (LuaJIT lacks them).

local floor = math.floor

-- a xor b for 0 <= a, b < 256
local function xor8(a, b)
  local result = 0
  local bit = 1
  for _ = 1, 8 do
    if a % 2 ~= b % 2 then
      result = result + bit
    end
    a = floor(a / 2)
    b = floor(b / 2)
    bit = bit * 2
  end
  return result
end

local function mandelbrot(size)
  local sum = 0
  local byte_acc = 0
  local bit_num = 0
  for y = 0, size - 1 do
    local ci = (2.0 * y / size) - 1.0
    for x = 0, size - 1 do
      local zrzr = 0.0
      local zi = 0.0
      local zizi = 0.0
      local cr = (2.0 * x / size) - 1.5
      local z = 0
      local not_done = true
      local escape = 0
      while not_done and z < 50 do
        local zr = zrzr - zizi + cr
        zi = 2.0 * zr * zi + ci
        zrzr = zr * zr
        zizi = zi * zi
        if zrzr + zizi > 4.0 then
          not_done = false
          escape = 1
        end
        z = z + 1
      end
      byte_acc = byte_acc * 2 + escape
      bit_num = bit_num + 1
      if bit_num == 8 then
        sum = xor8(sum, byte_acc)
        byte_acc = 0
        bit_num = 0
      elseif x == size - 1 then
        while bit_num < 8 do
          byte_acc = byte_acc * 2
          bit_num = bit_num + 1
        end
        sum = xor8(sum, byte_acc)
        byte_acc = 0
        bit_num = 0
      end
    end
  end
  return sum
end

local iterations = 3
local total = 0
for _ = 1, iterations do
  local result = mandelbrot(500)
  if result ~= 191 then
    error("mandelbrot: wrong result " .. result)
  end
  total = total + result
end
print(string.format("%d", total))
