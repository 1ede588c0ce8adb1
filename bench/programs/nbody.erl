%% NBody (Are We Fast Yet / Benchmarks Game): simulate the Jovian planets with a
%% simple symplectic integrator; print the system's energy before and after.
%% A body is a tuple {X, Y, Z, VX, VY, VZ, Mass}, the system a list of five; every
%% step builds the moved bodies anew (the same arithmetic, in the same order, as the
%% twins' field updates).
-module(nbody).
-export([main/0]).

-define(PI, 3.141592653589793).
-define(SOLAR_MASS, (4.0 * ?PI * ?PI)).
-define(DAYS_PER_YEAR, 365.24).

new_body(X, Y, Z, VX, VY, VZ, Mass) ->
    {X, Y, Z, VX * ?DAYS_PER_YEAR, VY * ?DAYS_PER_YEAR, VZ * ?DAYS_PER_YEAR, Mass * ?SOLAR_MASS}.

create_bodies() ->
    Sun = new_body(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0),
    Jupiter = new_body(
        4.84143144246472090, -1.16032004402742839, -1.03622044471123109e-1,
        1.66007664274403694e-3, 7.69901118419740425e-3, -6.90460016972063023e-5,
        9.54791938424326609e-4),
    Saturn = new_body(
        8.34336671824457987, 4.12479856412430479, -4.03523417114321381e-1,
        -2.76742510726862411e-3, 4.99852801234917238e-3, 2.30417297573763929e-5,
        2.85885980666130812e-4),
    Uranus = new_body(
        1.28943695621391310e1, -1.51111514016986312e1, -2.23307578892655734e-1,
        2.96460137564761618e-3, 2.37847173959480950e-3, -2.96589568540237556e-5,
        4.36624404335156298e-5),
    Neptune = new_body(
        1.53796971148509165e1, -2.59193146099879641e1, 1.79258772950371181e-1,
        2.68067772490389322e-3, 1.62824170038242295e-3, -9.51592254519715870e-5,
        5.15138902046611451e-5),
    Bodies = [Sun, Jupiter, Saturn, Uranus, Neptune],
    %% offset the sun's momentum so the system's total momentum is zero
    {PX, PY, PZ} = lists:foldl(
        fun({_, _, _, VX, VY, VZ, M}, {PX0, PY0, PZ0}) ->
            {PX0 + VX * M, PY0 + VY * M, PZ0 + VZ * M}
        end, {0.0, 0.0, 0.0}, Bodies),
    {X, Y, Z, _, _, _, M} = Sun,
    Sun1 = {X, Y, Z, 0.0 - (PX / ?SOLAR_MASS), 0.0 - (PY / ?SOLAR_MASS), 0.0 - (PZ / ?SOLAR_MASS), M},
    [Sun1, Jupiter, Saturn, Uranus, Neptune].

%% The velocity updates of body I against every later body: returns I and the later
%% bodies updated.
pairs(I, [], Acc, _Dt) -> {I, lists:reverse(Acc)};
pairs({IX, IY, IZ, IVX, IVY, IVZ, IM}, [{JX, JY, JZ, JVX, JVY, JVZ, JM} | Rest], Acc, Dt) ->
    DX = IX - JX,
    DY = IY - JY,
    DZ = IZ - JZ,
    DSquared = DX * DX + DY * DY + DZ * DZ,
    Distance = math:sqrt(DSquared),
    Mag = Dt / (DSquared * Distance),
    I1 = {IX, IY, IZ, IVX - DX * JM * Mag, IVY - DY * JM * Mag, IVZ - DZ * JM * Mag, IM},
    J1 = {JX, JY, JZ, JVX + DX * IM * Mag, JVY + DY * IM * Mag, JVZ + DZ * IM * Mag, JM},
    pairs(I1, Rest, [J1 | Acc], Dt).

velocities([], Acc, _Dt) -> lists:reverse(Acc);
velocities([I | Rest], Acc, Dt) ->
    {I1, Rest1} = pairs(I, Rest, [], Dt),
    velocities(Rest1, [I1 | Acc], Dt).

positions([], _Dt) -> [];
positions([{X, Y, Z, VX, VY, VZ, M} | Rest], Dt) ->
    [{X + Dt * VX, Y + Dt * VY, Z + Dt * VZ, VX, VY, VZ, M} | positions(Rest, Dt)].

advance(Bodies, Dt) -> positions(velocities(Bodies, [], Dt), Dt).

energy([], E) -> E;
energy([{IX, IY, IZ, IVX, IVY, IVZ, IM} | Rest], E0) ->
    E1 = E0 + 0.5 * IM * (IVX * IVX + IVY * IVY + IVZ * IVZ),
    E = lists:foldl(
        fun({JX, JY, JZ, _, _, _, JM}, Acc) ->
            DX = IX - JX,
            DY = IY - JY,
            DZ = IZ - JZ,
            Distance = math:sqrt(DX * DX + DY * DY + DZ * DZ),
            Acc - (IM * JM) / Distance
        end, E1, Rest),
    energy(Rest, E).

steps(0, Bodies) -> Bodies;
steps(N, Bodies) -> steps(N - 1, advance(Bodies, 0.01)).

main() ->
    Bodies = create_bodies(),
    io:format("~.9f~n", [energy(Bodies, 0.0)]),
    io:format("~.9f~n", [energy(steps(250000, Bodies), 0.0)]).
