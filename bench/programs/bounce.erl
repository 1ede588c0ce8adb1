%% Bounce (Are We Fast Yet): balls bouncing in a 500x500 box, count the bounces.
%% A ball is a record (a tuple), rebuilt when it moves; the generator's seed is
%% threaded through the calls.
-module(bounce).
-export([main/0]).

-record(ball, {x, y, x_vel, y_vel}).

%% AWFY's generator.
next_random(Seed) -> (Seed * 1309 + 13849) band 65535.

new_ball(S0) ->
    S1 = next_random(S0),
    S2 = next_random(S1),
    S3 = next_random(S2),
    S4 = next_random(S3),
    {#ball{x = S1 rem 500, y = S2 rem 500, x_vel = S3 rem 300 - 150, y_vel = S4 rem 300 - 150}, S4}.

new_balls(0, Seed, Acc) -> {lists:reverse(Acc), Seed};
new_balls(N, Seed, Acc) ->
    {Ball, Seed1} = new_ball(Seed),
    new_balls(N - 1, Seed1, [Ball | Acc]).

%% Returns the moved ball and whether it bounced.
bounce(#ball{x = X0, y = Y0, x_vel = XV0, y_vel = YV0}) ->
    XLimit = 500,
    YLimit = 500,
    X1 = X0 + XV0,
    Y1 = Y0 + YV0,
    {X2, XV1, B1} = if X1 > XLimit -> {XLimit, 0 - abs(XV0), true}; true -> {X1, XV0, false} end,
    {X, XV, B2} = if X2 < 0 -> {0, abs(XV1), true}; true -> {X2, XV1, B1} end,
    {Y2, YV1, B3} = if Y1 > YLimit -> {YLimit, 0 - abs(YV0), true}; true -> {Y1, YV0, B2} end,
    {Y, YV, B4} = if Y2 < 0 -> {0, abs(YV1), true}; true -> {Y2, YV1, B3} end,
    {#ball{x = X, y = Y, x_vel = XV, y_vel = YV}, B4}.

%% One step: every ball bounces once; returns the moved balls and the new count.
step([], Acc, Bounces) -> {lists:reverse(Acc), Bounces};
step([Ball | Rest], Acc, Bounces) ->
    case bounce(Ball) of
        {Moved, true} -> step(Rest, [Moved | Acc], Bounces + 1);
        {Moved, false} -> step(Rest, [Moved | Acc], Bounces)
    end.

steps(0, _Balls, Bounces) -> Bounces;
steps(N, Balls, Bounces) ->
    {Moved, Bounces1} = step(Balls, [], Bounces),
    steps(N - 1, Moved, Bounces1).

benchmark() ->
    {Balls, _Seed} = new_balls(100, 74755, []),
    steps(50, Balls, 0).

run(0, Total) -> Total;
run(I, Total) ->
    case benchmark() of
        1331 -> run(I - 1, Total + 1331);
        R -> erlang:error({bounce, wrong_result, R})
    end.

main() ->
    io:format("~b~n", [run(1000, 0)]).
