-- Queens (Are We Fast Yet): solve the eight queens problem by backtracking,
-- ten times per iteration; count the solved boards.

local free_rows, free_maxs, free_mins, queen_rows

local function get_row_column(r, c)
  -- 0-based r and c, shifted by one for Lua's 1-based arrays
  return free_rows[r + 1] and free_maxs[c + r + 1] and free_mins[c - r + 8]
end

local function set_row_column(r, c, v)
  free_rows[r + 1] = v
  free_maxs[c + r + 1] = v
  free_mins[c - r + 8] = v
end

local function place_queen(c)
  for r = 0, 7 do
    if get_row_column(r, c) then
      queen_rows[r + 1] = c
      set_row_column(r, c, false)
      if c == 7 then
        return true
      end
      if place_queen(c + 1) then
        return true
      end
      set_row_column(r, c, true)
    end
  end
  return false
end

local function filled(n, value)
  local a = {}
  for i = 1, n do
    a[i] = value
  end
  return a
end

local function queens()
  free_rows = filled(8, true)
  free_maxs = filled(16, true)
  free_mins = filled(16, true)
  queen_rows = filled(8, -1)
  return place_queen(0)
end

local function benchmark()
  local solved = 0
  for _ = 1, 10 do
    if queens() then
      solved = solved + 1
    end
  end
  return solved
end

local iterations = 1500
local total = 0
for _ = 1, iterations do
  local result = benchmark()
  if result ~= 10 then
    error("queens: wrong result " .. result)
  end
  total = total + result
end
print(string.format("%d", total))
