-- NBody (Are We Fast Yet / Benchmarks Game): simulate the Jovian planets with a
-- simple symplectic integrator; print the system's energy before and after.

local sqrt = math.sqrt

local PI = 3.141592653589793
local SOLAR_MASS = 4.0 * PI * PI
local DAYS_PER_YEAR = 365.24

local function new_body(x, y, z, vx, vy, vz, mass)
  return {
    x = x, y = y, z = z,
    vx = vx * DAYS_PER_YEAR, vy = vy * DAYS_PER_YEAR, vz = vz * DAYS_PER_YEAR,
    mass = mass * SOLAR_MASS,
  }
end

local function create_bodies()
  local sun = new_body(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
  local jupiter = new_body(
    4.84143144246472090, -1.16032004402742839, -1.03622044471123109e-1,
    1.66007664274403694e-3, 7.69901118419740425e-3, -6.90460016972063023e-5,
    9.54791938424326609e-4)
  local saturn = new_body(
    8.34336671824457987, 4.12479856412430479, -4.03523417114321381e-1,
    -2.76742510726862411e-3, 4.99852801234917238e-3, 2.30417297573763929e-5,
    2.85885980666130812e-4)
  local uranus = new_body(
    1.28943695621391310e1, -1.51111514016986312e1, -2.23307578892655734e-1,
    2.96460137564761618e-3, 2.37847173959480950e-3, -2.96589568540237556e-5,
    4.36624404335156298e-5)
  local neptune = new_body(
    1.53796971148509165e1, -2.59193146099879641e1, 1.79258772950371181e-1,
    2.68067772490389322e-3, 1.62824170038242295e-3, -9.51592254519715870e-5,
    5.15138902046611451e-5)
  local bodies = { sun, jupiter, saturn, uranus, neptune }

  -- offset the sun's momentum so the system's total momentum is zero
  local px = 0.0
  local py = 0.0
  local pz = 0.0
  for i = 1, #bodies do
    local b = bodies[i]
    px = px + b.vx * b.mass
    py = py + b.vy * b.mass
    pz = pz + b.vz * b.mass
  end
  sun.vx = 0.0 - (px / SOLAR_MASS)
  sun.vy = 0.0 - (py / SOLAR_MASS)
  sun.vz = 0.0 - (pz / SOLAR_MASS)
  return bodies
end

local function advance(bodies, dt)
  local n = #bodies
  for i = 1, n do
    local ib = bodies[i]
    for j = i + 1, n do
      local jb = bodies[j]
      local dx = ib.x - jb.x
      local dy = ib.y - jb.y
      local dz = ib.z - jb.z
      local d_squared = dx * dx + dy * dy + dz * dz
      local distance = sqrt(d_squared)
      local mag = dt / (d_squared * distance)
      ib.vx = ib.vx - dx * jb.mass * mag
      ib.vy = ib.vy - dy * jb.mass * mag
      ib.vz = ib.vz - dz * jb.mass * mag
      jb.vx = jb.vx + dx * ib.mass * mag
      jb.vy = jb.vy + dy * ib.mass * mag
      jb.vz = jb.vz + dz * ib.mass * mag
    end
  end
  for i = 1, n do
    local b = bodies[i]
    b.x = b.x + dt * b.vx
    b.y = b.y + dt * b.vy
    b.z = b.z + dt * b.vz
  end
end

local function energy(bodies)
  local e = 0.0
  local n = #bodies
  for i = 1, n do
    local ib = bodies[i]
    e = e + 0.5 * ib.mass * (ib.vx * ib.vx + ib.vy * ib.vy + ib.vz * ib.vz)
    for j = i + 1, n do
      local jb = bodies[j]
      local dx = ib.x - jb.x
      local dy = ib.y - jb.y
      local dz = ib.z - jb.z
      local distance = sqrt(dx * dx + dy * dy + dz * dz)
      e = e - (ib.mass * jb.mass) / distance
    end
  end
  return e
end

local steps = 250000
local bodies = create_bodies()
print(string.format("%.9f", energy(bodies)))
for _ = 1, steps do
  advance(bodies, 0.01)
end
print(string.format("%.9f", energy(bodies)))
