-- Towers (Are We Fast Yet): solve the towers of Hanoi for 13 disks, the piles
-- being linked lists of disks; count the moves.

local piles = nil
local moves_done = 0

local function push_disk(disk, pile)
  local top = piles[pile]
  if top ~= nil and disk.size >= top.size then
    error("Cannot put a big disk on a smaller one")
  end
  disk.next = top
  piles[pile] = disk
end

local function pop_disk_from(pile)
  local top = piles[pile]
  if top == nil then
    error("Attempting to remove a disk from an empty pile")
  end
  piles[pile] = top.next
  top.next = nil
  return top
end

local function move_top_disk(from_pile, to_pile)
  push_disk(pop_disk_from(from_pile), to_pile)
  moves_done = moves_done + 1
end

local function build_tower_at(pile, disks)
  for i = disks, 0, -1 do
    push_disk({ size = i, next = nil }, pile)
  end
end

local function move_disks(disks, from_pile, to_pile)
  if disks == 1 then
    move_top_disk(from_pile, to_pile)
  else
    local other_pile = (6 - from_pile) - to_pile
    move_disks(disks - 1, from_pile, other_pile)
    move_top_disk(from_pile, to_pile)
    move_disks(disks - 1, other_pile, to_pile)
  end
end

local function benchmark()
  piles = {}
  build_tower_at(1, 13)
  moves_done = 0
  move_disks(13, 1, 2)
  return moves_done
end

local iterations = 600
local total = 0
for _ = 1, iterations do
  local result = benchmark()
  if result ~= 8191 then
    error("towers: wrong result " .. result)
  end
  total = total + result
end
print(string.format("%d", total))
