# Mandelbrot (Are We Fast Yet): render a size x size Mandelbrot set as a bitmap
# (one bit per pixel, 8 pixels per byte) and xor all bytes into a checksum.
# Bitwise operators are spelled out arithmetically (LuaJIT lacks them).


def xor8(a, b):
    """a xor b for 0 <= a, b < 256"""
    result = 0
    bit = 1
    for _ in range(8):
        if a % 2 != b % 2:
            result += bit
        a //= 2
        b //= 2
        bit *= 2
    return result


def mandelbrot(size):
    total = 0
    byte_acc = 0
    bit_num = 0
    for y in range(size):
        ci = (2.0 * y / size) - 1.0
        for x in range(size):
            zrzr = 0.0
            zi = 0.0
            zizi = 0.0
            cr = (2.0 * x / size) - 1.5
            z = 0
            not_done = True
            escape = 0
            while not_done and z < 50:
                zr = zrzr - zizi + cr
                zi = 2.0 * zr * zi + ci
                zrzr = zr * zr
                zizi = zi * zi
                if zrzr + zizi > 4.0:
                    not_done = False
                    escape = 1
                z += 1
            byte_acc = byte_acc * 2 + escape
            bit_num += 1
            if bit_num == 8:
                total = xor8(total, byte_acc)
                byte_acc = 0
                bit_num = 0
            elif x == size - 1:
                while bit_num < 8:
                    byte_acc *= 2
                    bit_num += 1
                total = xor8(total, byte_acc)
                byte_acc = 0
                bit_num = 0
    return total


def main():
    iterations = 3
    total = 0
    for _ in range(iterations):
        result = mandelbrot(500)
        if result != 191:
            raise RuntimeError("mandelbrot: wrong result %d" % result)
        total += result
    print(total)


main()
