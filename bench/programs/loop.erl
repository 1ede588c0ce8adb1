%% Loop: a tight integer loop, 50 million iterations of sum = (sum + i*i) mod p,
%% as a tail-recursive function.
-module(loop).
-export([main/0]).

loop(N, N, Sum) -> Sum;
loop(I, N, Sum) -> loop(I + 1, N, (Sum + I * I) rem 1000000007).

main() ->
    io:format("~b~n", [loop(0, 50000000, 0)]).
