# Loop: a tight integer loop, 50 million iterations of sum = (sum + i*i) mod p.
# Every intermediate value stays below 2^53, so LuaJIT's doubles agree.


def main():
    n = 50000000
    total = 0
    for i in range(n):
        total = (total + i * i) % 1000000007
    print(total)


main()
