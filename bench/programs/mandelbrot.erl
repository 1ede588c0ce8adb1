%% Mandelbrot (Are We Fast Yet): render a size x size Mandelbrot set as a bitmap
%% (one bit per pixel, 8 pixels per byte) and xor all bytes into a checksum.
%% Erlang has the bitwise operators (bsl, bxor), as Tern and AWFY do; the loops are
%% tail-recursive functions carrying the loop state.
-module(mandelbrot).
-export([main/0]).

%% 1 if the point escapes within 50 iterations, else 0.
escape(_Zrzr, _Zi, _Zizi, _Cr, _Ci, 50) -> 0;
escape(Zrzr, Zi0, Zizi, Cr, Ci, Z) ->
    Zr = Zrzr - Zizi + Cr,
    Zi = 2.0 * Zr * Zi0 + Ci,
    Zrzr1 = Zr * Zr,
    Zizi1 = Zi * Zi,
    case Zrzr1 + Zizi1 > 4.0 of
        true -> 1;
        false -> escape(Zrzr1, Zi, Zizi1, Cr, Ci, Z + 1)
    end.

%% The pixels of row Y from X on; returns {Sum, ByteAcc, BitNum}.
row(Size, X, _Ci, Sum, ByteAcc, BitNum) when X =:= Size -> {Sum, ByteAcc, BitNum};
row(Size, X, Ci, Sum, ByteAcc0, BitNum0) ->
    Cr = (2.0 * X / Size) - 1.5,
    ByteAcc = (ByteAcc0 bsl 1) + escape(0.0, 0.0, 0.0, Cr, Ci, 0),
    BitNum = BitNum0 + 1,
    if
        BitNum =:= 8 ->
            row(Size, X + 1, Ci, Sum bxor ByteAcc, 0, 0);
        X =:= Size - 1 ->
            row(Size, X + 1, Ci, Sum bxor (ByteAcc bsl (8 - BitNum)), 0, 0);
        true ->
            row(Size, X + 1, Ci, Sum, ByteAcc, BitNum)
    end.

rows(Size, Y, Sum, _ByteAcc, _BitNum) when Y =:= Size -> Sum;
rows(Size, Y, Sum0, ByteAcc0, BitNum0) ->
    Ci = (2.0 * Y / Size) - 1.0,
    {Sum, ByteAcc, BitNum} = row(Size, 0, Ci, Sum0, ByteAcc0, BitNum0),
    rows(Size, Y + 1, Sum, ByteAcc, BitNum).

mandelbrot(Size) -> rows(Size, 0, 0, 0, 0).

run(0, Total) -> Total;
run(I, Total) ->
    case mandelbrot(500) of
        191 -> run(I - 1, Total + 191);
        R -> erlang:error({mandelbrot, wrong_result, R})
    end.

main() ->
    io:format("~b~n", [run(3, 0)]).
