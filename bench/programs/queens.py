# Queens (Are We Fast Yet): solve the eight queens problem by backtracking,
# ten times per iteration; count the solved boards.

free_rows = free_maxs = free_mins = queen_rows = None


def get_row_column(r, c):
    return free_rows[r] and free_maxs[c + r] and free_mins[c - r + 7]


def set_row_column(r, c, v):
    free_rows[r] = v
    free_maxs[c + r] = v
    free_mins[c - r + 7] = v


def place_queen(c):
    for r in range(8):
        if get_row_column(r, c):
            queen_rows[r] = c
            set_row_column(r, c, False)
            if c == 7:
                return True
            if place_queen(c + 1):
                return True
            set_row_column(r, c, True)
    return False


def queens():
    global free_rows, free_maxs, free_mins, queen_rows
    free_rows = [True] * 8
    free_maxs = [True] * 16
    free_mins = [True] * 16
    queen_rows = [-1] * 8
    return place_queen(0)


def benchmark():
    solved = 0
    for _ in range(10):
        if queens():
            solved += 1
    return solved


def main():
    iterations = 1500
    total = 0
    for _ in range(iterations):
        result = benchmark()
        if result != 10:
            raise RuntimeError("queens: wrong result %d" % result)
        total += result
    print(total)


main()
