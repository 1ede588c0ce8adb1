-- Bounce (Are We Fast Yet): balls bouncing in a 500x500 box, count the bounces.

local seed = 74755

local function next_random()
  seed = (seed * 1309 + 13849) % 65536
  return seed
end

local function new_ball()
  local x = next_random() % 500
  local y = next_random() % 500
  local x_vel = next_random() % 300 - 150
  local y_vel = next_random() % 300 - 150
  return { x = x, y = y, x_vel = x_vel, y_vel = y_vel }
end

local abs = math.abs

local function bounce(ball)
  local x_limit = 500
  local y_limit = 500
  local bounced = false
  ball.x = ball.x + ball.x_vel
  ball.y = ball.y + ball.y_vel
  if ball.x > x_limit then
    ball.x = x_limit
    ball.x_vel = 0 - abs(ball.x_vel)
    bounced = true
  end
  if ball.x < 0 then
    ball.x = 0
    ball.x_vel = abs(ball.x_vel)
    bounced = true
  end
  if ball.y > y_limit then
    ball.y = y_limit
    ball.y_vel = 0 - abs(ball.y_vel)
    bounced = true
  end
  if ball.y < 0 then
    ball.y = 0
    ball.y_vel = abs(ball.y_vel)
    bounced = true
  end
  return bounced
end

local function benchmark()
  seed = 74755
  local ball_count = 100
  local bounces = 0
  local balls = {}
  for i = 1, ball_count do
    balls[i] = new_ball()
  end
  for _ = 1, 50 do
    for i = 1, ball_count do
      if bounce(balls[i]) then
        bounces = bounces + 1
      end
    end
  end
  return bounces
end

local iterations = 1000
local total = 0
for _ = 1, iterations do
  local result = benchmark()
  if result ~= 1331 then
    error("bounce: wrong result " .. result)
  end
  total = total + result
end
print(string.format("%d", total))
