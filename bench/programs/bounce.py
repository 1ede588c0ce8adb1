# Bounce (Are We Fast Yet): balls bouncing in a 500x500 box, count the bounces.

seed = 74755


def next_random():
    global seed
    seed = (seed * 1309 + 13849) % 65536
    return seed


def new_ball():
    x = next_random() % 500
    y = next_random() % 500
    x_vel = next_random() % 300 - 150
    y_vel = next_random() % 300 - 150
    return {"x": x, "y": y, "x_vel": x_vel, "y_vel": y_vel}


def bounce(ball):
    x_limit = 500
    y_limit = 500
    bounced = False
    ball["x"] += ball["x_vel"]
    ball["y"] += ball["y_vel"]
    if ball["x"] > x_limit:
        ball["x"] = x_limit
        ball["x_vel"] = 0 - abs(ball["x_vel"])
        bounced = True
    if ball["x"] < 0:
        ball["x"] = 0
        ball["x_vel"] = abs(ball["x_vel"])
        bounced = True
    if ball["y"] > y_limit:
        ball["y"] = y_limit
        ball["y_vel"] = 0 - abs(ball["y_vel"])
        bounced = True
    if ball["y"] < 0:
        ball["y"] = 0
        ball["y_vel"] = abs(ball["y_vel"])
        bounced = True
    return bounced


def benchmark():
    global seed
    seed = 74755
    ball_count = 100
    bounces = 0
    balls = [new_ball() for _ in range(ball_count)]
    for _ in range(50):
        for ball in balls:
            if bounce(ball):
                bounces += 1
    return bounces


def main():
    iterations = 1000
    total = 0
    for _ in range(iterations):
        result = benchmark()
        if result != 1331:
            raise RuntimeError("bounce: wrong result %d" % result)
        total += result
    print(total)


main()
